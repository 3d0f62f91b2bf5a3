"""The peers in the benchmark, each with its defaults except the shared concurrency.

PgQueuer 1.6: one `QueueManager` on one asyncpg connection (as its own benchmark runs it),
`batch_size` = the shared concurrency. Procrastinate: one worker with `concurrency` slots on a
psycopg pool, LISTEN/NOTIFY on, successful jobs deleted (as ours and PgQueuer's are).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from bench.queue_common import Enqueue, Plan, Probe, QueueSystem

# Procrastinate polls as a fallback only; LISTEN/NOTIFY wakes it.
PROCRASTINATE_POLL_SECONDS = 1.0


class PgQueuerQueue(QueueSystem):
    name = "pgqueuer"

    async def open(self, dsn: str, plan: Plan) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        self._dsn = dsn
        self._plan = plan
        self._admin = await asyncpg.connect(dsn)
        self._queries = Queries(AsyncpgDriver(self._admin))
        await self._queries.install()
        self._connections: list[asyncpg.Connection] = [self._admin]

    async def producer(self) -> Enqueue:
        from pgqueuer import AsyncpgDriver, Queries

        connection = await asyncpg.connect(self._dsn)
        self._connections.append(connection)
        queries = Queries(AsyncpgDriver(connection))

        async def enqueue() -> None:
            await queries.enqueue("noop", None)

        return enqueue

    async def enqueue_batch(self, count: int) -> None:
        await self._queries.enqueue(["noop"] * count, [None] * count, [0] * count)

    async def clear(self) -> None:
        await self._queries.clear_queue()

    @asynccontextmanager
    async def worker(self, probe: Probe) -> AsyncIterator[None]:
        from pgqueuer import AsyncpgDriver, Queries, QueueManager

        connection = await asyncpg.connect(self._dsn)
        self._connections.append(connection)
        manager = QueueManager(Queries(AsyncpgDriver(connection)))

        @manager.entrypoint("noop")
        async def noop(job: Any) -> None:
            probe.job_started()

        task = asyncio.create_task(manager.run(batch_size=self._plan.concurrency))
        try:
            yield
        finally:
            manager.shutdown.set()
            await task

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()


class ProcrastinateQueue(QueueSystem):
    name = "procrastinate"

    async def open(self, dsn: str, plan: Plan) -> None:
        import procrastinate

        self._plan = plan
        connector = procrastinate.PsycopgConnector(
            conninfo=dsn, min_size=1, max_size=plan.concurrency + 4
        )
        self._app = procrastinate.App(connector=connector)
        self._probe: Probe | None = None

        @self._app.task(name="noop")
        async def noop() -> None:
            if self._probe is not None:
                self._probe.job_started()

        self._task = noop
        await self._app.open_async()
        await self._app.schema_manager.apply_schema_async()

    async def producer(self) -> Enqueue:
        async def enqueue() -> None:
            await self._task.defer_async()

        return enqueue

    async def enqueue_batch(self, count: int) -> None:
        await self._task.batch_defer_async(*([{}] * count))

    async def clear(self) -> None:
        await self._app.connector.execute_query_async("TRUNCATE procrastinate_jobs CASCADE")

    @asynccontextmanager
    async def worker(self, probe: Probe) -> AsyncIterator[None]:
        self._probe = probe
        task = asyncio.create_task(
            self._app.run_worker_async(
                concurrency=self._plan.concurrency,
                wait=True,
                install_signal_handlers=False,
                delete_jobs="successful",
                fetch_job_polling_interval=PROCRASTINATE_POLL_SECONDS,
                shutdown_graceful_timeout=5.0,
            )
        )
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        await self._app.close_async()
