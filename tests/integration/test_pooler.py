"""Behind PgBouncer in transaction mode (one server connection, so every client's transactions
share it, as they share a few in production): the roles leave no session state on the server
connection, hold no lock there, the LISTEN connections and locks use the direct address."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.pooler import PGBOUNCER, PgBouncer

pytestmark = pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="pgbouncer not installed")

SESSION_STATE = """
SELECT current_setting('synchronous_commit'), current_setting('plan_cache_mode'),
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())
"""


@pytest.fixture
def bouncer(admin_dsn: str) -> Iterator[PgBouncer]:
    running = PgBouncer(admin_dsn, default_pool_size=1)
    try:
        yield running
    finally:
        running.close()


async def test_all_roles_behind_pgbouncer_leave_no_session_state_on_its_server_connection(
    bouncer: PgBouncer, database_dsn: str, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for(
        database_url=bouncer.pooled(database_dsn),
        database_direct_url=database_dsn,
        roles=frozenset(Role),
        job_poll_interval_seconds=0.05,
    )
    async with serving(create_app(settings)) as client:
        assert (await client.get("/ready")).status_code == 200
        await asyncio.sleep(0.5)  # claim cycles, a maintenance pass, metrics below
        assert "switchyard_queue_due_jobs 0.0" in (await client.get("/metrics")).text
        pooled = await asyncpg.connect(bouncer.pooled(database_dsn), statement_cache_size=0)
        try:
            state = tuple(await pooled.fetchrow(SESSION_STATE) or ())
        finally:
            await pooled.close()
    # The worker's claim settings stay off the shared server connection; no lock is left there.
    assert state == ("on", "auto", 0)
