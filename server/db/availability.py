"""Errors that mean "the database is away", as opposed to "this request is wrong".

A refused or reset connection, a server that is starting up or shutting down, a connection
that died mid-query, a full disk or too many connections, a statement cancelled by its timeout,
or a pool that timed out waiting: each says nothing about the request, and the same request
succeeds once the database is back (or has room again). The API answers
them with 503 and `Retry-After`, never 500.
"""

from __future__ import annotations

from typing import Final

import asyncpg

DATABASE_AWAY_ERRORS: Final = (
    OSError,  # refused, reset, unreachable; TimeoutError (a pool acquire that waited too long)
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection failed or is gone
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01: terminated by a fast or immediate shutdown
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.InsufficientResourcesError,  # class 53: disk full, out of memory, too many clients
    asyncpg.QueryCanceledError,  # 57014: statement_timeout, or cancelled by an operator
    asyncpg.InterfaceError,  # the connection was closed under the client, the pool is closing
    asyncpg.InternalClientError,  # asyncpg's protocol left mid-operation by a lost connection
)
