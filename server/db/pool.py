"""The process's one database pool: Piccolo's engine, pointed at the configured PostgreSQL.

Piccolo resolves its engine through `config.piccolo_conf` for tables and migrations alike, so
there is one engine object per process; `open_pool` points it at a DSN and owns its pool for
the duration of a context. Raw asyncpg work (the queue) borrows connections from the same pool.

Released connections are not reset: asyncpg's default reset costs a round trip on every release
(`RESET ALL`, `UNLISTEN *`, advisory unlocks), which on the hot path was one statement in five.
asyncpg still rolls back a transaction left open and drops listener callbacks. Code that
changes a pooled connection's session (settings, session-level advisory locks) does it inside
`changed_session`, which resets that connection before it goes back.

The pool serves its waiters first come, first served (`server.db.fair_pool`): under load a
webhook waits its turn behind the worker's jobs instead of being overtaken again and again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog
from piccolo.engine.postgres import PostgresEngine

from server.db.fair_pool import make_fair

log = structlog.get_logger(__name__)

PICCOLO_CONF_MODULE = "config.piccolo_conf"
CONNECT_TIMEOUT_SECONDS = 10.0
COMMAND_TIMEOUT_SECONDS = 60.0


def piccolo_database() -> PostgresEngine:
    """The engine Piccolo's tables and migrations use (`config.piccolo_conf.DB`)."""
    # Piccolo's finder imports the module named here, also for `piccolo` CLI commands.
    os.environ.setdefault("PICCOLO_CONF", PICCOLO_CONF_MODULE)
    from config.piccolo_conf import DB

    return DB


@asynccontextmanager
async def open_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    close_timeout_seconds: float = 5.0,
    prepared_statements: bool = True,
) -> AsyncIterator[PostgresEngine]:
    """Point the engine at `dsn`, open its pool, and close the pool on exit (within
    `close_timeout_seconds`, see `close_pool`).

    `prepared_statements=False` turns asyncpg's statement cache off, for a transaction-mode
    pooler that does not carry named prepared statements across transactions (PgBouncer before
    1.21): each query is then parsed as the unnamed statement, bound and run in one go, which
    any pooler passes through.
    """
    engine = piccolo_database()
    engine.config = {
        "dsn": dsn,
        "timeout": CONNECT_TIMEOUT_SECONDS,
        "command_timeout": COMMAND_TIMEOUT_SECONDS,
        # application_name is the one startup parameter every pooler passes on.
        "server_settings": {"application_name": "switchyard"},
    }
    if not prepared_statements:
        engine.config["statement_cache_size"] = 0
    await engine.start_connection_pool(min_size=min_size, max_size=max_size, reset=_keep_session)
    make_fair(asyncpg_pool(engine))
    try:
        yield engine
    finally:
        await close_pool(asyncpg_pool(engine), close_timeout_seconds)
        engine.pool = None


async def close_pool(pool: asyncpg.Pool, timeout_seconds: float) -> None:
    """Close `pool`, waiting at most `timeout_seconds` for connections still out (a stuck
    query, a connection lost mid-release); then terminate them, so shutdown is bounded."""
    try:
        await asyncio.wait_for(pool.close(), timeout_seconds)
    except TimeoutError:
        log.warning("pool_close_timed_out", waited_seconds=timeout_seconds)
        pool.terminate()


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset hook: nothing to undo (see the module docstring)."""


@asynccontextmanager
async def changed_session(connection: Any) -> AsyncIterator[None]:
    """A block that changes the session of pooled `connection`; it is reset on exit (or
    closed, if resetting fails), so the next borrower gets a clean session."""
    try:
        yield
    finally:
        try:
            await connection.execute(connection.get_reset_query())
        except BaseException:
            connection.terminate()
            raise


def asyncpg_pool(engine: PostgresEngine) -> asyncpg.Pool:
    """The asyncpg pool behind an open engine."""
    pool = engine.pool
    if pool is None:
        raise RuntimeError("the database engine has no open pool; use open_pool()")
    return pool


def transaction() -> Any:
    """A Piccolo transaction on the process's engine; Piccolo queries inside it join it.

    `async with transaction() as tx:` then `tx.connection` for raw asyncpg (queue) calls.
    """
    return piccolo_database().transaction()
