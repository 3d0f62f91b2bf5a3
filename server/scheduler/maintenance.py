"""Housekeeping the scheduler role runs: retention pruning and database-trigger repair.

Every `MAINTENANCE_INTERVAL` one replica (whichever takes the advisory lock; the others skip
that pass) fails the executions whose step job died outside its handler, re-installs capture triggers missing from watched tables, recording a source it
cannot repair in that trigger's health, and prunes finished executions, events and dead or
withdrawn jobs and audit log entries older than `RETENTION_DAYS`, a bounded number of batches per pass so a large
backlog drains over several passes instead of one long one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from contextlib import suppress
from typing import Final

import asyncpg
import msgspec
import structlog

from config.settings import Settings
from server.db.maintenance import (
    PRUNE_BATCH,
    PRUNE_STATEMENTS,
    prune_batch,
    repair_database_triggers,
)
from server.db.session_locks import TRY_LOCK, session_lock
from server.db.trigger_health import record_trigger_error
from server.queue.client import Connection
from server.runs.control import fail_dead_steps

log = structlog.get_logger(__name__)

MAINTENANCE_INTERVAL: Final = dt.timedelta(seconds=60)
MAX_BATCHES_PER_PASS: Final = 50
# Arbitrary constant shared by every replica: "sw-maint".
MAINTENANCE_LOCK_ID: Final = 0x73772D6D61696E74
MAINTENANCE_APPLICATION_NAME: Final = "switchyard-maintenance"


class MaintenanceReport(msgspec.Struct, frozen=True, kw_only=True):
    pruned: dict[str, int]
    repaired: list[str]
    unrepaired: dict[str, str]
    dead_steps: int


async def maintenance_pass(
    pool: asyncpg.Pool, settings: Settings, now: dt.datetime, *, direct_dsn: str
) -> MaintenanceReport | None:
    """One pass; None when another replica holds the lock.

    The lock is a session-level advisory lock on a connection of its own to `direct_dsn` (a
    pooler in transaction mode would leave it on whichever server connection took it); it is
    released when that connection closes at the end of the pass, whatever happens. The work
    goes through the pool.
    """
    async with (
        session_lock(
            direct_dsn, MAINTENANCE_APPLICATION_NAME, TRY_LOCK, MAINTENANCE_LOCK_ID
        ) as locked,
        pool.acquire(timeout=10) as connection,
    ):
        if not locked:
            return None
        dead_steps = await fail_dead_steps(connection)
        repaired, problems = await repair_database_triggers(
            connection, settings.database_trigger_tables
        )
        cutoff = now - dt.timedelta(days=settings.retention_days)
        pruned = {what: await _prune(connection, what, cutoff) for what in PRUNE_STATEMENTS}
    for key, problem in problems.items():
        log.warning("database_trigger_unrepaired", trigger_key=key, error=problem)
        await record_trigger_error(pool, key, problem)
    for key in repaired:
        log.warning("database_trigger_repaired", trigger_key=key)
    if dead_steps:
        log.warning("executions_failed_for_dead_steps", count=dead_steps)
    if any(pruned.values()):
        log.info("retention_pruned", **pruned)
    return MaintenanceReport(
        pruned=pruned, repaired=repaired, unrepaired=problems, dead_steps=dead_steps
    )


async def _prune(connection: Connection, what: str, cutoff: dt.datetime) -> int:
    total = 0
    for _ in range(MAX_BATCHES_PER_PASS):
        deleted = await prune_batch(connection, what, cutoff)
        total += deleted
        if deleted < PRUNE_BATCH:
            break
    return total


async def maintenance_loop(
    pool: asyncpg.Pool, settings: Settings, stop: asyncio.Event, *, direct_dsn: str
) -> None:
    """Run passes until `stop` is set; a failed pass is logged and the next one retries."""
    while not stop.is_set():
        try:
            await maintenance_pass(pool, settings, dt.datetime.now(dt.UTC), direct_dsn=direct_dsn)
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            log.warning("maintenance_failed", error=repr(error))
        with suppress(TimeoutError):
            async with asyncio.timeout(MAINTENANCE_INTERVAL.total_seconds()):
                await stop.wait()
