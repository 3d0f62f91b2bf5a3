"""Session-level advisory locks, each on a connection of its own to the direct address.

A transaction-mode pooler hands each transaction whichever server connection is free, so a
session lock taken through it stays on that server connection (held by nobody, released by
nobody). A lock that must outlive one transaction is therefore taken on a dedicated connection
to DATABASE_DIRECT_URL and released by closing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import asyncpg

CONNECT_TIMEOUT_SECONDS: Final = 10.0


@asynccontextmanager
async def session_lock(dsn: str, lock_id: int, application_name: str) -> AsyncIterator[bool]:
    """Try the advisory lock `lock_id` on a new connection to `dsn`; yields whether it was
    taken. Leaving the block closes the connection, which releases the lock."""
    connection = await asyncpg.connect(
        dsn,
        timeout=CONNECT_TIMEOUT_SECONDS,
        server_settings={"application_name": application_name},
    )
    try:
        yield bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_id))
    finally:
        await connection.close()
