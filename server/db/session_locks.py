"""Session-level advisory locks, each on a connection of its own to the direct address.

A transaction-mode pooler hands each transaction whichever server connection is free, so a
session lock taken through it stays on that server connection (held by nobody, released by
nobody). A lock that must outlive one transaction is therefore taken on a dedicated connection
to DATABASE_DIRECT_URL and released by closing it; the work it guards goes through the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import asyncpg

CONNECT_TIMEOUT_SECONDS: Final = 10.0
TRY_LOCK: Final = "SELECT pg_try_advisory_lock($1)"


@asynccontextmanager
async def session_lock(
    dsn: str, application_name: str, try_lock: str, *key: object
) -> AsyncIterator[bool]:
    """Run the try-lock statement `try_lock` (`TRY_LOCK`, or a two-key form) with `key` on a
    new connection to `dsn`; yields whether the lock was taken. Leaving the block closes the
    connection, which releases the lock, whatever happened meanwhile."""
    connection = await asyncpg.connect(
        dsn,
        timeout=CONNECT_TIMEOUT_SECONDS,
        server_settings={"application_name": application_name},
    )
    try:
        yield bool(await connection.fetchval(try_lock, *key))
    finally:
        await connection.close()
