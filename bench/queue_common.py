"""What the queue benchmark measures, the same way for every system.

A system (ours or a peer) supplies a fresh schema, a single and a batch enqueue, a way to
empty its queue, and a worker that runs the shared no-op handler (`Probe.job_started`). The
procedure is fixed: single enqueue of `jobs` jobs by `concurrency` producers (one connection
each, one job per call), then batch enqueue of `jobs` jobs (which stay queued), then a drain of
those jobs by one worker of `concurrency` slots, timed from the worker's start to the last
handler call, then idle latency: `latency_jobs` jobs enqueued one at a time, each after the
previous one started and a pause, measured from just before the enqueue call to the handler's
first line.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec

DRAIN_TIMEOUT_SECONDS: Final = 600.0
START_TIMEOUT_SECONDS: Final = 10.0
# A job enqueued while the worker is still busy with the previous one measures nothing idle.
LATENCY_PAUSE_SECONDS: Final = 0.01


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    jobs: int
    concurrency: int
    batch_size: int
    latency_jobs: int


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    enqueue_per_s: float
    enqueue_batch_per_s: float
    drain_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float


class Probe:
    """The no-op handler's only effect: count calls, time them, tell waiters."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.started = 0
        self.drained = asyncio.Event()
        self.drained_at = 0.0
        self.waiter: asyncio.Future[float] | None = None

    def job_started(self) -> None:
        now = time.perf_counter()
        self.started += 1
        if self.started == self.expected:
            self.drained_at = now
            self.drained.set()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(now)


Enqueue = Callable[[], Awaitable[None]]


class QueueSystem(ABC):
    """One queue implementation under test, on its own fresh database."""

    name: str

    @abstractmethod
    async def open(self, dsn: str, plan: Plan) -> None: ...

    @abstractmethod
    async def producer(self) -> Enqueue:
        """A function enqueuing one job per call on a connection of its own."""

    @abstractmethod
    async def enqueue_batch(self, count: int) -> None: ...

    @abstractmethod
    async def clear(self) -> None: ...

    @abstractmethod
    def worker(self, probe: Probe) -> AbstractAsyncContextManager[None]: ...

    @abstractmethod
    async def close(self) -> None: ...


async def measure(system: QueueSystem, dsn: str, plan: Plan) -> Figures:
    await system.open(dsn, plan)
    try:
        single = await measure_single_enqueue(system, plan)
        await system.clear()
        batch = await measure_batch_enqueue(system, plan)
        probe = Probe(expected=plan.jobs)
        started = time.perf_counter()
        async with system.worker(probe):
            async with asyncio.timeout(DRAIN_TIMEOUT_SECONDS):
                await probe.drained.wait()
            drain = plan.jobs / (probe.drained_at - started)
            latencies = await measure_latency(system, probe, plan)
    finally:
        await system.close()
    return Figures(
        enqueue_per_s=single,
        enqueue_batch_per_s=batch,
        drain_per_s=drain,
        latency_p50_ms=percentile(latencies, 50),
        latency_p99_ms=percentile(latencies, 99),
    )


async def measure_single_enqueue(system: QueueSystem, plan: Plan) -> float:
    producers = [await system.producer() for _ in range(plan.concurrency)]
    share = plan.jobs // plan.concurrency

    async def produce(enqueue: Enqueue, count: int) -> None:
        for _ in range(count):
            await enqueue()

    counts = [share + (1 if n < plan.jobs % plan.concurrency else 0) for n in range(len(producers))]
    started = time.perf_counter()
    await asyncio.gather(*(produce(p, c) for p, c in zip(producers, counts, strict=True)))
    return plan.jobs / (time.perf_counter() - started)


async def measure_batch_enqueue(system: QueueSystem, plan: Plan) -> float:
    started = time.perf_counter()
    for first in range(0, plan.jobs, plan.batch_size):
        await system.enqueue_batch(min(plan.batch_size, plan.jobs - first))
    return plan.jobs / (time.perf_counter() - started)


async def measure_latency(system: QueueSystem, probe: Probe, plan: Plan) -> list[float]:
    """Milliseconds from enqueue call to handler start, one job at a time on an idle worker."""
    enqueue = await system.producer()
    loop = asyncio.get_running_loop()
    latencies = []
    for _ in range(plan.latency_jobs):
        await asyncio.sleep(LATENCY_PAUSE_SECONDS)
        probe.waiter = loop.create_future()
        sent = time.perf_counter()
        await enqueue()
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            started = await probe.waiter
        latencies.append((started - sent) * 1000)
    return latencies


def percentile(values: list[float], pct: int) -> float:
    """The `pct`-th percentile (inclusive method: p50 of [1, 2, 3] is 2)."""
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


async def fresh_database(admin_dsn: str, name: str) -> str:
    """Drop and create database `name` on the server of `admin_dsn`; return its DSN."""
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
