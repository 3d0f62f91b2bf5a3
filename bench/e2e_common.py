"""What the end-to-end benchmark measures, the same way for every server under test.

A server (Switchyard or n8n) runs as a child process on loopback with a webhook-triggered
three-step workflow; it supplies the request that fires it and a tally of its executions read
from its own database. The procedure is fixed: poll the webhook until it answers 2xx, a warm-up
load, wait until the warm-up's executions finished, then for each concurrency level a closed
loop of signed (or, for n8n, plain) webhooks for `duration_s`, followed by the drain. Per level:

- `executions_per_s`: successful executions whose finish time falls in the load window (first
  request sent to last answer received), divided by the window;
- `response_p50_ms` / `response_p99_ms`: webhook answer times seen by the clients;
- `drain_lag_s`: from the last answer to the last of the level's executions finishing;
- `lost`: accepted (2xx) webhooks without a successful execution once drained; `failed`:
  executions that ended failed; both must be 0;
- `rss_mb`: peak resident memory of the server's process tree, sampled during load and drain;
- `cpu_ms_per_execution`: CPU time of that tree over load and drain, per finished execution
  (steadier than rates on a shared machine: it is what an execution costs the server).

Executions of a level are those created at or after its first request; levels run one after
another, each after the previous one drained, so nothing overlaps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import statistics
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    suppress,
)
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import msgspec
import psutil  # type: ignore[import-untyped]  # ships no type information

from bench.e2e_load import Request, run_load

HOST: Final = "127.0.0.1"
READY_TIMEOUT_SECONDS: Final = 180.0
WEBHOOK_LIVE_TIMEOUT_SECONDS: Final = 120.0
DRAIN_TIMEOUT_SECONDS: Final = 600.0
# A drain with no execution finishing for this long is over: the rest are lost.
DRAIN_STALL_SECONDS: Final = 20.0
DRAIN_POLL_SECONDS: Final = 0.25
RSS_SAMPLE_SECONDS: Final = 0.25
STOP_TIMEOUT_SECONDS: Final = 30.0
# Bound on requests per phase, far above what either server answers in the phase.
MAX_REQUESTS_PER_SECOND: Final = 20_000
RUN_LOCK_KEY: Final = 0x5377_6531  # pg_try_advisory_lock key of bench.e2e ("Swe1")

Say = Callable[[str], None]


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    levels: tuple[int, ...]
    duration_s: float
    warmup_s: float


class Tally(msgspec.Struct, frozen=True, kw_only=True):
    """A server's executions created since some instant, by state."""

    succeeded: int
    failed: int
    unfinished: int
    last_finished_at: dt.datetime | None


def tally_of(row: asyncpg.Record | None) -> Tally:
    """The Tally of a one-row count query (succeeded, failed, unfinished, last_finished_at)."""
    if row is None:
        raise RuntimeError("an aggregate query returned no row")
    return Tally(
        succeeded=row["succeeded"],
        failed=row["failed"],
        unfinished=row["unfinished"],
        last_finished_at=row["last_finished_at"],
    )


class LevelFigures(msgspec.Struct, frozen=True, kw_only=True):
    executions_per_s: float
    response_p50_ms: float
    response_p99_ms: float
    lost: int
    failed: int
    rss_mb: float
    drain_lag_s: float
    accepted: int
    refused: int
    accepted_per_s: float
    cpu_ms_per_execution: float  # server CPU time (all cores) over load and drain, per execution


class Server(ABC):
    """One system under test: a child process with a webhook-triggered workflow."""

    name: str
    port: int
    accepted_statuses: frozenset[int]  # answers that mean "the event is durable"

    @abstractmethod
    def running(self, admin_dsn: str, run_dir: Path) -> AbstractAsyncContextManager[None]:
        """Fresh database, process started and the workflow live; stopped on exit."""

    @abstractmethod
    def request(self, phase: str, number: int) -> Request:
        """Webhook request `number` of `phase` (unique across phases: ids are never reused)."""

    @abstractmethod
    def process_ids(self) -> list[int]:
        """Root processes whose trees make the server's memory."""

    @abstractmethod
    async def tally(self, since: dt.datetime) -> Tally: ...

    @abstractmethod
    async def succeeded_between(self, start: dt.datetime, end: dt.datetime) -> int: ...


async def measure(server: Server, plan: Plan, say: Say) -> dict[int, LevelFigures]:
    """Warm up, then one closed-loop load per concurrency level, each drained before the next."""
    await wait_for_webhook(server)
    say(f"{server.name}: warm-up {plan.warmup_s:.0f} s")
    warmup_since = dt.datetime.now(dt.UTC)
    warmup = await run_load(
        HOST, server.port, lambda n: server.request("warmup", n),
        concurrency=min(plan.levels), duration_s=plan.warmup_s,
        max_requests=int(plan.warmup_s * MAX_REQUESTS_PER_SECOND) + 1,
        accepted_statuses=server.accepted_statuses,
    )  # fmt: skip
    await drain(server, warmup_since, warmup.accepted)
    figures = {}
    for level in plan.levels:
        say(f"{server.name}: concurrency {level}, {plan.duration_s:.0f} s")
        figures[level] = await measure_level(server, plan, level)
    return figures


async def measure_level(server: Server, plan: Plan, level: int) -> LevelFigures:
    sampler = ProcessSampler(server.process_ids())
    sampling = asyncio.create_task(sampler.run())
    try:
        since = dt.datetime.now(dt.UTC)
        load = await run_load(
            HOST, server.port, lambda n: server.request(f"c{level}", n),
            concurrency=level, duration_s=plan.duration_s,
            max_requests=int(plan.duration_s * MAX_REQUESTS_PER_SECOND) + 1,
            accepted_statuses=server.accepted_statuses,
        )  # fmt: skip
        tally = await drain(server, since, load.accepted)
        cpu_seconds = sampler.cpu_used()
    finally:
        sampling.cancel()
        with suppress(asyncio.CancelledError):
            await sampling
    for sample in load.samples:
        print(f"{server.name} c{level}: {sample}", file=sys.stderr)
    window_start = dt.datetime.fromtimestamp(load.started_at, dt.UTC)
    window_end = dt.datetime.fromtimestamp(load.stopped_at, dt.UTC)
    window_s = load.stopped_at - load.started_at
    succeeded = await server.succeeded_between(window_start, window_end)
    last = tally.last_finished_at
    return LevelFigures(
        executions_per_s=round(succeeded / window_s, 1),
        response_p50_ms=round(percentile(load.latencies_ms, 50), 2),
        response_p99_ms=round(percentile(load.latencies_ms, 99), 2),
        lost=max(0, load.accepted - tally.succeeded),
        failed=tally.failed,
        rss_mb=round(sampler.peak_bytes / 2**20, 1),
        cpu_ms_per_execution=round(1000 * cpu_seconds / max(1, tally.succeeded + tally.failed), 2),
        drain_lag_s=round(max(0.0, last.timestamp() - load.stopped_at) if last else 0.0, 2),
        accepted=load.accepted,
        refused=load.refused + load.errors,
        accepted_per_s=round(load.accepted / window_s, 1),
    )


async def drain(server: Server, since: dt.datetime, accepted: int) -> Tally:
    """Wait until every execution since `since` finished and at least `accepted` did, or until
    none has finished for DRAIN_STALL_SECONDS (the rest are lost)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    tally = await server.tally(since)
    progress_at, finished = time.monotonic(), -1
    while time.monotonic() < deadline:
        done = tally.succeeded + tally.failed
        if tally.unfinished == 0 and done >= accepted:
            return tally
        if done != finished:
            progress_at, finished = time.monotonic(), done
        elif time.monotonic() - progress_at > DRAIN_STALL_SECONDS:
            return tally
        await asyncio.sleep(DRAIN_POLL_SECONDS)
        tally = await server.tally(since)
    return tally


async def wait_for_webhook(server: Server) -> None:
    """Post until the webhook answers 2xx: a server is ready before its webhook is live."""
    from bench.e2e_load import post_once

    deadline = time.monotonic() + WEBHOOK_LIVE_TIMEOUT_SECONDS
    number = 0
    while True:
        try:
            response = await post_once(HOST, server.port, server.request("probe", number))
        except OSError:
            response = None
        if response is not None and response.status in server.accepted_statuses:
            return
        if time.monotonic() > deadline:
            detail = f"{response.status} {response.body[:300]!r}" if response else "no answer"
            raise RuntimeError(f"{server.name}: webhook not live after warm-up: {detail}")
        number += 1
        await asyncio.sleep(0.5)


class ProcessSampler:
    """Peak resident memory and CPU time of some process trees (roots and descendants)."""

    def __init__(self, root_pids: Sequence[int]) -> None:
        self._roots = [psutil.Process(pid) for pid in root_pids]
        self.peak_bytes = 0
        self._cpu_start = self.cpu_seconds()

    def _processes(self) -> list[Any]:
        found = []
        for root in self._roots:
            with suppress(psutil.Error):
                found.extend([root, *root.children(recursive=True)])
        return found

    def sample(self) -> None:
        total = 0
        for process in self._processes():
            with suppress(psutil.Error):
                total += int(process.memory_info().rss)
        self.peak_bytes = max(self.peak_bytes, total)

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self._processes():
            with suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def cpu_used(self) -> float:
        """CPU seconds the trees used since this sampler was made."""
        return self.cpu_seconds() - self._cpu_start

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(RSS_SAMPLE_SECONDS)


def percentile(values: list[float], pct: int) -> float:
    """The `pct`-th percentile (inclusive method); 0 for fewer than two values."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def free_port() -> int:
    """A TCP port free on loopback now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def start_process(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> asyncio.subprocess.Process:
    """Start a server with its output in `log_path`, in its own session (stopped as a group)."""
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *argv, env=dict(env), stdout=log, stderr=log, cwd=cwd, start_new_session=True
        )


async def run_command(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> None:
    """Run a set-up command to its end; a failure names the log holding its output."""
    process = await start_process(argv, env, log_path, cwd)
    if await process.wait() != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])} failed (exit {process.returncode}): {tail(log_path)}"
        )


async def stop_process(process: asyncio.subprocess.Process, name: str) -> None:
    """SIGTERM to the process group we started, SIGKILL after STOP_TIMEOUT_SECONDS."""
    if process.returncode is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
            await process.wait()
    except TimeoutError:
        print(f"{name} ignored SIGTERM for {STOP_TIMEOUT_SECONDS:.0f} s: killed", file=sys.stderr)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


@asynccontextmanager
async def exclusive_run(admin_dsn: str) -> AsyncIterator[None]:
    """Hold a session advisory lock on the admin database: two benchmarks at once would drop
    each other's databases and share the CPU."""
    connection = await asyncpg.connect(admin_dsn)
    try:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", RUN_LOCK_KEY):
            raise SystemExit("bench.e2e: another end-to-end benchmark runs on this PostgreSQL")
        yield
    finally:
        await connection.close()


@contextmanager
def cancelled_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT cancel the current task, so every server started gets stopped."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("cancelled_on_signals needs a running task")
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def busy_cores() -> float:
    """The one-minute load average: above ~0.5 other work shares the CPU with the run."""
    return os.getloadavg()[0]


async def wait_until_ready(
    process: asyncio.subprocess.Process, url: str, log_path: Path, name: str
) -> None:
    """Poll `url` until it answers 200; fail early (with the log's tail) if the process exits."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {tail(log_path)}")
            with suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{name} not ready after {READY_TIMEOUT_SECONDS:.0f} s: {tail(log_path)}")


def tail(log_path: Path, lines: int = 15) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return f"(log {log_path})\n" + "\n".join(text.splitlines()[-lines:])
