"""Leases: a heartbeat keeps long jobs ours, a lost lease stops the handler, and the job of a
worker killed with SIGKILL is rescued once its lease expires and runs again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg
from structlog.testing import capture_logs

from server.queue import client
from server.queue.handlers import JobContext
from server.queue.jobs import NewJob
from tests.support.invariants import assert_invariants
from tests.support.queue_support import fast_settings, worker_on
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


async def _gone(connection: asyncpg.Connection) -> bool:
    return bool(await connection.fetchval("SELECT count(*) FROM job") == 0)


async def test_the_heartbeat_keeps_a_job_longer_than_its_lease(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    attempts: list[int] = []
    lease = 0.8

    async def long(context: JobContext) -> None:
        attempts.append(context.attempt)
        await asyncio.sleep(lease * 2.5)  # the job's own work, longer than two leases

    await client.enqueue_job(connection, NewJob(kind="long"))
    with capture_logs() as logs:
        async with worker_on(database_dsn, {"long": long}, fast_settings(job_lease_seconds=lease)):
            await eventually(lambda: _gone(connection), what="job completed")
    assert attempts == [1]
    assert [e for e in logs if e["event"] in ("job_rescued", "job_lease_lost")] == []


async def test_a_lease_taken_over_cancels_the_handler(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def long(context: JobContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = await client.enqueue_job(connection, NewJob(kind="long"))
    settings = fast_settings(job_lease_seconds=0.6)
    with capture_logs() as logs:
        async with worker_on(database_dsn, {"long": long}, settings) as worker:
            await eventually(started.is_set, what="handler started")
            await connection.execute("UPDATE job SET lease_token = gen_random_uuid()")
            await eventually(cancelled.is_set, what="handler cancelled")
            await eventually(lambda: worker.in_flight == 0, what="slot freed")
    lost = [e for e in logs if e["event"] == "job_lease_lost"]
    assert [(e["job_id"], e["attempt"]) for e in lost] == [(job_id, 1)]
    assert await connection.fetchval("SELECT state FROM job") == "running"


async def test_a_sigkilled_workers_job_is_rescued_and_run_again(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    job_id = await client.enqueue_job(connection, NewJob(kind="block"))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.worker_process",
        database_dsn,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        holder = await eventually(
            lambda: connection.fetchval("SELECT locked_by FROM job WHERE state = 'running'"),
            within=20,
            what="job claimed by the worker process",
        )
        assert f":{process.pid}:" in holder
    finally:
        process.send_signal(signal.SIGKILL)
        _, errors = await process.communicate()
    assert process.returncode == -signal.SIGKILL, errors.decode()
    reran: list[int] = []

    async def block(context: JobContext) -> None:
        reran.append(context.attempt)

    with capture_logs() as logs:
        async with worker_on(database_dsn, {"block": block}, fast_settings(job_lease_seconds=1)):
            await eventually(lambda: _gone(connection), what="job rescued and completed")
    assert reran == [2]
    [rescued] = [e for e in logs if e["event"] == "job_rescued"]
    assert (rescued["job_id"], rescued["attempt"], rescued["state"]) == (job_id, 1, "queued")
    await assert_invariants(database_dsn)


class _Escape(BaseException):
    """Raised through every `except Exception` of the runner, as a protocol error once did."""


async def test_a_job_whose_runner_crashed_is_not_renewed_but_rescued_and_run_again(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    attempts: list[int] = []

    async def crashing_once(context: JobContext) -> None:
        attempts.append(context.attempt)
        if context.attempt == 1:
            raise _Escape

    await client.enqueue_job(connection, NewJob(kind="crashy", max_attempts=3))
    with capture_logs() as logs:
        settings = fast_settings(job_lease_seconds=0.6)
        async with worker_on(database_dsn, {"crashy": crashing_once}, settings):
            await eventually(lambda: _gone(connection), what="job rescued and completed")
    assert attempts == [1, 2]
    assert "job_runner_crashed" in [e["event"] for e in logs]
    await assert_invariants(database_dsn)
