"""Transactions give their connection back on every path, so an outage never shrinks the pool
and shutdown never waits on a connection nobody will release (issue 11's third defect)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from server.db.pool import asyncpg_pool, open_pool, transaction
from server.db.tables import WorkflowDefinition
from tests.support.db_proxy import DatabaseProxy, database_proxy
from tests.support.waiting import eventually

STATE = "SELECT state FROM pg_stat_activity WHERE pid = $1"


async def _transaction_cut_short(proxy: DatabaseProxy, watcher: asyncpg.Connection) -> None:
    """A transaction whose connection is cut while a statement runs in it."""
    async with transaction() as tx:
        backend = tx.connection.get_server_pid()
        sleeping = asyncio.create_task(tx.connection.execute("SELECT pg_sleep(5)"))
        await eventually(
            lambda: watcher.fetchval(STATE, backend),
            until=lambda state: state == "active",
            what="the statement running in PostgreSQL",
        )
        await proxy.cut()
        await sleeping


async def test_a_connection_lost_inside_a_transaction_goes_back_to_the_pool(
    database_dsn: str,
) -> None:
    watcher = await asyncpg.connect(database_dsn)  # direct, not through the proxy
    try:
        async with database_proxy(database_dsn) as proxy:
            async with open_pool(proxy.dsn, min_size=1, max_size=1) as engine:
                for _ in range(3):  # each time the pool's only connection dies mid-transaction
                    with pytest.raises(Exception) as caught:  # noqa: PT011 - any connection error
                        await _transaction_cut_short(proxy, watcher)
                    assert not isinstance(caught.value, AssertionError), caught.value
                    await proxy.restore()
                async with asyncio.timeout(10):  # the pool still serves
                    async with transaction():
                        assert await WorkflowDefinition.count().run() == 0
                await proxy.cut()
                held = await asyncpg_pool(engine).acquire()  # a connection nobody gives back
                assert held is not None
                started = time.monotonic()
            assert time.monotonic() - started < 8.0  # closing the pool did not wait forever
    finally:
        await watcher.close()
