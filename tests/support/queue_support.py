"""Helpers shared by the queue and worker tests: claims with a long lease, expired leases, fast
settings, and a worker run against a test database (waiting for it is `tests.support.waiting`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import asyncpg

from config.settings import Settings
from server.queue.client import claim_jobs
from server.queue.handlers import JobHandler
from server.queue.jobs import ClaimedJob
from server.worker.role import Worker, running


async def claim(
    connection: asyncpg.Connection, limit: int = 10, worker: str = "w1"
) -> list[ClaimedJob]:
    """Claim as worker `worker` with a long lease (queue-level tests)."""
    return await claim_jobs(connection, worker_id=worker, limit=limit, lease_seconds=30.0)


async def expire_leases(connection: asyncpg.Connection) -> None:
    """Move every lease into the past: the test's stand-in for waiting a lease out."""
    await connection.execute(
        "UPDATE job SET locked_until = now() - interval '1 second' WHERE state = 'running'"
    )


def fast_settings(**overrides: object) -> Settings:
    """Settings with short periods, so lease expiry, retries and polling happen in tests."""
    values: dict[str, object] = {
        "worker_concurrency": 4,
        "job_poll_interval_seconds": 0.2,
        "job_lease_seconds": 2.0,
        "job_timeout_seconds": 5.0,
        "job_retry_base_seconds": 0.01,
        "job_retry_max_seconds": 0.05,
        "job_listener_reconnect_seconds": 0.1,
        "shutdown_grace_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class CrashRecorder:
    """An `on_crash` for tests: remembers crashed loops so a test can assert there were none."""

    def __init__(self) -> None:
        self.crashes: list[tuple[str, BaseException]] = []

    def __call__(self, name: str, error: BaseException) -> None:
        self.crashes.append((name, error))


@asynccontextmanager
async def worker_on(
    dsn: str, handlers: Mapping[str, JobHandler], settings: Settings | None = None
) -> AsyncIterator[Worker]:
    """A worker with its own pool on `dsn`; fails the test if one of its loops crashed."""
    crashes = CrashRecorder()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
    try:
        async with running(
            pool, dsn, settings or fast_settings(), handlers, on_crash=crashes
        ) as worker:
            yield worker
    finally:
        await pool.close()
    assert not crashes.crashes, f"worker loops crashed: {crashes.crashes}"
