"""The LISTEN connection: when it is killed, jobs still start (by polling), and once it is
back, notifications wake the worker again."""

from __future__ import annotations

import asyncio

import asyncpg
from structlog.testing import capture_logs

from server.queue import client
from server.queue.handlers import JobContext
from server.queue.jobs import NewJob
from server.queue.listener import LISTENER_APPLICATION_NAME
from server.worker.role import Worker
from tests.support.queue_support import fast_settings, worker_on
from tests.support.waiting import eventually

KILL_LISTENER = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE application_name = $1 AND datname = current_database()
"""


async def test_jobs_start_while_the_listener_is_down_and_wake_ups_resume_when_it_returns(
    database_dsn: str,
) -> None:
    started: list[tuple[int, bool]] = []
    worker: Worker | None = None

    async def note(context: JobContext) -> None:
        assert worker is not None
        started.append((context.payload["n"], worker.listener.connected))

    # Reconnecting takes longer than a poll, so the first job can only start by polling.
    settings = fast_settings(job_poll_interval_seconds=0.1, job_listener_reconnect_seconds=1.5)
    connection = await asyncpg.connect(database_dsn)
    try:
        with capture_logs() as logs:
            async with worker_on(database_dsn, {"note": note}, settings) as worker:
                listener = worker.listener
                await eventually(lambda: listener.connected, what="listener connected")
                assert await connection.fetchval(KILL_LISTENER, LISTENER_APPLICATION_NAME)
                await eventually(lambda: not listener.connected, what="listener loss noticed")
                await client.enqueue_job(connection, NewJob(kind="note", payload={"n": 1}))
                await eventually(lambda: len(started) == 1, what="job started by polling")
                await eventually(lambda: listener.connections == 2, what="listener reconnected")
                heard = listener.notifications
                await client.enqueue_job(connection, NewJob(kind="note", payload={"n": 2}))
                await eventually(lambda: len(started) == 2, what="job started after reconnect")
                await eventually(lambda: listener.notifications > heard, what="notification")
    finally:
        await connection.close()
    assert started == [(1, False), (2, True)]
    assert any(e["event"] == "job_listener_lost" for e in logs)


async def test_an_idle_worker_is_woken_by_notify_not_by_polling(database_dsn: str) -> None:
    started = asyncio.Event()

    async def note(context: JobContext) -> None:
        started.set()

    settings = fast_settings(job_poll_interval_seconds=30.0)
    connection = await asyncpg.connect(database_dsn)
    try:
        async with worker_on(database_dsn, {"note": note}, settings) as worker:
            await eventually(lambda: worker.listener.connected, what="listener connected")
            await client.enqueue_job(connection, NewJob(kind="note"))
            await eventually(started.is_set, within=5.0, what="job started")
    finally:
        await connection.close()
