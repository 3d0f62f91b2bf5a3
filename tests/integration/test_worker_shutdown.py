"""Graceful stop: no new claims, in-flight jobs finish within the grace period, the rest are
cancelled and released with their attempt counted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from config.settings import Settings
from server.queue import client
from server.queue.handlers import JobContext, JobHandler
from server.queue.jobs import NewJob
from server.worker.role import Worker
from tests.support.invariants import assert_invariants
from tests.support.queue_support import fast_settings, worker_on
from tests.support.waiting import eventually


async def run_until_stopped(
    dsn: str, handlers: dict[str, JobHandler], settings: Settings
) -> tuple[asyncio.Task[None], Callable[[], Awaitable[Worker]], asyncio.Event]:
    """Run a worker in a task; setting the returned event makes it leave its block (stop)."""
    stop = asyncio.Event()
    ready: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()

    async def run() -> None:
        async with worker_on(dsn, handlers, settings) as worker:
            ready.set_result(worker)
            await stop.wait()

    task = asyncio.create_task(run())
    return task, lambda: asyncio.shield(ready), stop


async def test_stop_lets_in_flight_jobs_finish_and_claims_nothing_new(database_dsn: str) -> None:
    started, proceed = asyncio.Event(), asyncio.Event()

    async def slow(context: JobContext) -> None:
        started.set()
        await proceed.wait()

    connection = await asyncpg.connect(database_dsn)
    try:
        first = await client.enqueue_job(connection, NewJob(kind="slow"))
        task, get_worker, stop = await run_until_stopped(
            database_dsn, {"slow": slow}, fast_settings(shutdown_grace_seconds=10)
        )
        worker = await get_worker()
        await eventually(started.is_set, what="first job started")
        stop.set()
        await eventually(lambda: worker.stopping, what="stopping")
        second = await client.enqueue_job(connection, NewJob(kind="slow"))
        proceed.set()
        await task
        rows = await connection.fetch("SELECT id, state, attempts FROM job")
    finally:
        await connection.close()
    assert first is not None
    assert [tuple(row) for row in rows] == [(second, "queued", 0)]
    await assert_invariants(database_dsn)


async def test_stop_releases_jobs_unfinished_after_the_grace_period(database_dsn: str) -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def stuck(context: JobContext) -> None:
        started.append(context.job_id)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(context.job_id)
            raise

    connection = await asyncpg.connect(database_dsn)
    try:
        again = await client.enqueue_job(connection, NewJob(kind="stuck"))
        last = await client.enqueue_job(connection, NewJob(kind="stuck", max_attempts=1))
        settings = fast_settings(shutdown_grace_seconds=0.2)
        async with worker_on(database_dsn, {"stuck": stuck}, settings):
            await eventually(lambda: len(started) == 2, what="both jobs started")
        rows = await connection.fetch(
            "SELECT id, state, attempts, locked_by, lease_token, last_error FROM job ORDER BY id"
        )
    finally:
        await connection.close()
    assert sorted(cancelled) == sorted(started)
    assert [(r["id"], r["state"], r["attempts"]) for r in rows] == [
        (again, "queued", 1),
        (last, "dead", 1),
    ]
    assert {(r["locked_by"], r["lease_token"]) for r in rows} == {(None, None)}
    assert all("released unfinished at shutdown of worker" in r["last_error"] for r in rows)
    await assert_invariants(database_dsn)  # released: no lease left behind
