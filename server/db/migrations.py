"""Applying the schema: Piccolo's migrations under a PostgreSQL advisory lock.

Any number of processes may start together (replicas, `switchyard migrate` run twice): each
takes a session-level advisory lock on a dedicated connection before running the migrations,
so exactly one applies them and the others find nothing left to do. Piccolo prints progress to
stdout; that is captured and logged as events instead, so start-up logs stay JSON.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import AsyncIterator
from typing import Final

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from piccolo.apps.migrations.commands.base import BaseMigrationManager
from piccolo.apps.migrations.commands.forwards import run_forwards
from piccolo.engine.postgres import PostgresEngine

from server.db.database import DatabaseAddresses
from server.db.piccolo_app import APP_NAME, MIGRATIONS_FOLDER
from server.db.pool import open_pool

log = structlog.get_logger(__name__)

Connection = asyncpg.Connection | PoolConnectionProxy  # a pooled connection or a dedicated one

# An arbitrary constant shared by every Switchyard process: "sw-migrate" as an integer.
MIGRATION_LOCK_ID: Final = 0x73772D6D696772
LOCK_TIMEOUT_SECONDS: Final = 300.0

TAKE_MIGRATION_LOCK: Final = "SELECT pg_advisory_lock($1)"
RELEASE_MIGRATION_LOCK: Final = "SELECT pg_advisory_unlock($1)"
APPLIED_MIGRATIONS: Final = "SELECT name FROM migration WHERE app_name = $1"
MIGRATION_TABLE_EXISTS: Final = "SELECT to_regclass('migration') IS NOT NULL"


class MigrationError(RuntimeError):
    """The schema could not be brought up to date."""


@functools.cache
def known_migrations() -> frozenset[str]:
    """The migration ids this build ships (the `ID` of each module in piccolo_migrations/)."""
    return frozenset(BaseMigrationManager().get_migration_modules(str(MIGRATIONS_FOLDER)))


async def migrate(engine: PostgresEngine) -> list[str]:
    """Apply every pending migration; returns the ids applied by this call (maybe none).

    `engine` must be the open Piccolo engine (`server.db.pool.open_pool`): Piccolo's
    migration runner finds it itself; the lock is held on a connection of its own.
    """
    connection = await engine.get_new_connection()
    try:
        await connection.execute("SET lock_timeout = 0")
        await connection.fetchval(
            TAKE_MIGRATION_LOCK, MIGRATION_LOCK_ID, timeout=LOCK_TIMEOUT_SECONDS
        )
        try:
            before = await applied_migrations(connection)
            pending = sorted(known_migrations() - before)
            if not pending:
                return []
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                result = await run_forwards(app_name=APP_NAME)
            if not result.success:
                raise MigrationError(f"migration failed: {result.message or output.getvalue()}")
            for migration_id in pending:
                log.info("migration_applied", migration_id=migration_id)
            return pending
        finally:
            await connection.fetchval(RELEASE_MIGRATION_LOCK, MIGRATION_LOCK_ID)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def migrated_pool(
    addresses: DatabaseAddresses, *, min_size: int, max_size: int
) -> AsyncIterator[PostgresEngine]:
    """The process's pool on the pooled address, once the schema is up to date. Behind a
    pooler the migrations run first through a short-lived pool on the direct address: their
    advisory lock needs a session of its own."""
    if addresses.behind_pooler:
        async with open_pool(addresses.direct, min_size=1, max_size=2) as direct:
            await migrate(direct)
    async with open_pool(
        addresses.pooled,
        min_size=min_size,
        max_size=max_size,
        prepared_statements=addresses.prepared_statements,
    ) as engine:
        if not addresses.behind_pooler:
            await migrate(engine)
        yield engine


async def applied_migrations(connection: Connection) -> frozenset[str]:
    """Ids of the Switchyard migrations the database has run."""
    if not await connection.fetchval(MIGRATION_TABLE_EXISTS):
        return frozenset()
    rows = await connection.fetch(APPLIED_MIGRATIONS, APP_NAME)
    return frozenset(row["name"] for row in rows)


async def pending_migrations(connection: Connection) -> frozenset[str]:
    """Migrations this build ships that the database has not run (empty: schema current)."""
    return known_migrations() - await applied_migrations(connection)
