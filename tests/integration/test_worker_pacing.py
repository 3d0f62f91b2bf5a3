"""A saturated worker leaves the event loop to the API: it claims fewer jobs while the loop
lags, so `/health`, served by the same process and loop, keeps answering quickly."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import uvicorn

from config.settings import Role, Settings
from server.app import create_app
from server.queue import client
from server.queue.handlers import JobContext
from server.queue.jobs import NewJob
from tests.support.queue_support import fast_settings, worker_on
from tests.support.waiting import eventually

SLOTS = 250  # WORKER_CONCURRENCY: far more CPU-bound jobs than one loop can run promptly
JOBS = 250
SLICES = 4  # each job: this many slices of busy CPU, yielding to the loop in between
SLICE_SECONDS = 0.004
# Without the limit, every loop iteration runs one slice of each of the SLOTS jobs in flight:
# 1 s during which nothing else on the loop (a /health request) is served.
HEALTH_BOUND_SECONDS = 0.4
PROBE_EVERY_SECONDS = 0.05


def burn(seconds: float) -> None:
    """Keep the CPU (and so the event loop) busy for `seconds` of wall-clock time."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def test_a_worker_saturated_by_cpu_bound_jobs_claims_fewer_and_health_answers(
    database_dsn: str, settings_for: Callable[..., Settings]
) -> None:
    peak_in_flight = 0
    running = 0

    async def busy(context: JobContext) -> None:
        nonlocal peak_in_flight, running
        running += 1
        peak_in_flight = max(peak_in_flight, running)
        try:
            for _ in range(SLICES):
                burn(SLICE_SECONDS)
                await asyncio.sleep(0)
        finally:
            running -= 1

    connection = await asyncpg.connect(database_dsn)
    try:
        async with serving_health(settings_for(roles=frozenset({Role.API}))) as port:
            await client.enqueue_jobs(connection, [NewJob(kind="busy")] * JOBS)
            settings = fast_settings(
                worker_concurrency=SLOTS, job_timeout_seconds=60.0, worker_target_lag_seconds=0.02
            )
            async with worker_on(database_dsn, {"busy": busy}, settings) as worker:
                probe = asyncio.create_task(probe_health(port))
                await eventually(lambda: _empty(connection), within=120, what="queue drained")
                answers = await stop(probe)
                cuts = worker.claim_limit.cuts
                lowest = worker.claim_limit.lowest
    finally:
        await connection.close()
    assert max(answers) < HEALTH_BOUND_SECONDS, f"/health answer times: {sorted(answers)[-5:]}"
    assert len(answers) >= 10, "the probe ran while the jobs did"
    assert cuts > 0, "the loop lagged, so the worker cut its claim limit"
    assert lowest < SLOTS / 4
    assert peak_in_flight < SLOTS / 2, "the worker never filled its slots while the loop lagged"


async def test_a_worker_with_the_target_off_fills_its_slots(database_dsn: str) -> None:
    peak_in_flight = 0
    running = 0
    release = asyncio.Event()

    async def hold(context: JobContext) -> None:
        nonlocal peak_in_flight, running
        running += 1
        peak_in_flight = max(peak_in_flight, running)
        burn(SLICE_SECONDS)
        await release.wait()
        running -= 1

    connection = await asyncpg.connect(database_dsn)
    try:
        await client.enqueue_jobs(connection, [NewJob(kind="hold")] * 60)
        settings = fast_settings(worker_concurrency=50, worker_target_lag_seconds=0)
        async with worker_on(database_dsn, {"hold": hold}, settings) as worker:
            await eventually(lambda: running == 50, what="fifty jobs running")
            release.set()
            await eventually(lambda: _empty(connection), what="queue drained")
            cuts = worker.claim_limit.cuts
    finally:
        await connection.close()
    assert (peak_in_flight, cuts) == (50, 0)


@asynccontextmanager
async def serving_health(settings: Settings) -> AsyncIterator[int]:
    """The app (api role) served by uvicorn on a loopback port, in this test's event loop."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, what="server started")
        yield port
    finally:
        server.should_exit = True
        await task


async def probe_health(port: int) -> list[float]:
    """GET /health on a raw keep-alive socket every PROBE_EVERY_SECONDS until cancelled;
    returns each answer's time in seconds (through the cancellation's result)."""
    answers: list[float] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            started = time.perf_counter()
            writer.write(b"GET /health HTTP/1.1\r\nHost: switchyard.test\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            answers.append(time.perf_counter() - started)
            await asyncio.sleep(PROBE_EVERY_SECONDS)
    except asyncio.CancelledError:
        return answers
    finally:
        writer.close()


async def stop(probe: asyncio.Task[list[float]]) -> list[float]:
    probe.cancel()
    return await probe


async def _empty(connection: asyncpg.Connection) -> bool:
    return bool(await connection.fetchval("SELECT count(*) FROM job") == 0)
