"""Switchyard's queue in the benchmark: `server.queue.client` and the worker role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from bench.queue_common import Enqueue, Plan, Probe, QueueSystem
from config.settings import Settings
from server.db.migrations import migrate
from server.db.pool import open_pool
from server.queue.client import enqueue_job, enqueue_jobs
from server.queue.handlers import JobContext
from server.queue.jobs import NewJob
from server.worker.role import running

NOOP = NewJob(kind="noop")


class SwitchyardQueue(QueueSystem):
    name = "switchyard"

    async def open(self, dsn: str, plan: Plan) -> None:
        self._dsn = dsn
        self._plan = plan
        async with open_pool(dsn) as engine:
            await migrate(engine)
        self._pool = await asyncpg.create_pool(dsn, min_size=1, max_size=plan.concurrency + 4)
        self._connections: list[asyncpg.Connection] = []

    async def producer(self) -> Enqueue:
        connection = await asyncpg.connect(self._dsn)
        self._connections.append(connection)

        async def enqueue() -> None:
            await enqueue_job(connection, NOOP)

        return enqueue

    async def enqueue_batch(self, count: int) -> None:
        async with self._pool.acquire() as connection:
            await enqueue_jobs(connection, [NOOP] * count)

    async def clear(self) -> None:
        await self._pool.execute("TRUNCATE job")

    @asynccontextmanager
    async def worker(self, probe: Probe) -> AsyncIterator[None]:
        async def noop(context: JobContext) -> None:
            probe.job_started()

        def crashed(name: str, error: BaseException) -> None:
            raise SystemExit(f"switchyard worker loop {name} crashed: {error!r}")

        settings = Settings(worker_concurrency=self._plan.concurrency)
        async with running(self._pool, self._dsn, settings, {"noop": noop}, on_crash=crashed):
            yield

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()
        await self._pool.close()
