"""Several workers on one queue never run a job twice, and each respects its slot limit."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack

import asyncpg

from server.queue import client
from server.queue.handlers import JobContext
from server.queue.jobs import NewJob
from tests.support.queue_support import fast_settings, worker_on
from tests.support.waiting import eventually

JOBS = 400
WORKERS = 3


async def test_concurrent_workers_never_run_one_job_twice(database_dsn: str) -> None:
    runs: Counter[int] = Counter()
    running_now: set[int] = set()
    overlaps: list[int] = []

    async def record(context: JobContext) -> None:
        if context.job_id in running_now:
            overlaps.append(context.job_id)
        running_now.add(context.job_id)
        runs[context.job_id] += 1
        await asyncio.sleep(0)  # let the other workers' loops run in between
        running_now.discard(context.job_id)

    connection = await asyncpg.connect(database_dsn)
    try:
        ids = await client.enqueue_jobs(connection, [NewJob(kind="record")] * JOBS)
        async with AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(worker_on(database_dsn, {"record": record}))
                for _ in range(WORKERS)
            ]
            await eventually(lambda: _empty(connection), what="queue drained")
        by_worker = [w.worker_id for w in workers]
    finally:
        await connection.close()
    assert sorted(runs) == sorted(ids)
    assert set(runs.values()) == {1}
    assert overlaps == []
    assert len(set(by_worker)) == WORKERS


async def _empty(connection: asyncpg.Connection) -> bool:
    return bool(await connection.fetchval("SELECT count(*) FROM job") == 0)


async def test_a_worker_runs_at_most_its_concurrency_at_once(database_dsn: str) -> None:
    release = asyncio.Event()
    running_now: set[int] = set()
    peak = 0

    async def hold(context: JobContext) -> None:
        nonlocal peak
        running_now.add(context.job_id)
        peak = max(peak, len(running_now))
        await release.wait()
        running_now.discard(context.job_id)

    connection = await asyncpg.connect(database_dsn)
    try:
        await client.enqueue_jobs(connection, [NewJob(kind="hold")] * 10)
        settings = fast_settings(worker_concurrency=3)
        async with worker_on(database_dsn, {"hold": hold}, settings) as worker:
            await eventually(lambda: len(running_now) == 3, what="three jobs running")
            claimed = await connection.fetchval("SELECT count(*) FROM job WHERE state = 'running'")
            assert (worker.in_flight, claimed) == (3, 3)
            release.set()
            await eventually(lambda: _empty(connection), what="queue drained")
    finally:
        await connection.close()
    assert peak == 3
