"""What the end-to-end benchmark measures, the same way for every server under test.

A server (Switchyard or n8n) runs as a child process on loopback with a webhook-triggered
three-step workflow; it supplies the request that fires it and a tally of its executions read
from its own database. The procedure is fixed: poll the webhook until it answers 2xx, a warm-up
load, wait until the warm-up's executions finished, then for each concurrency level a closed
loop of signed (or, for n8n, plain) webhooks for `duration_s`, followed by the drain, then for
each rate an open loop at that many webhooks per second (latency counted from when each request
was due), followed by the drain. Levels are labelled by their clients ("8") or rate ("50/s").
Per level:

- `executions_per_s`: successful executions whose finish time falls in the load window (first
  request sent to last answer received), divided by the window;
- `response_p50_ms` / `response_p99_ms`: webhook answer times seen by the clients;
- `drain_lag_s`: from the last answer to the last of the level's executions finishing;
- `executions_per_s_with_drain`: the level's successful executions over the time from its
  first request to its last execution finishing (what the server sustained, backlog included);
- `lost`: accepted (2xx) webhooks without a successful execution once drained; `failed`:
  executions that ended failed; `unrecorded`: successful executions whose record is incomplete
  (ours: fewer than three successful steps or no task; n8n: no saved execution data or no Set
  node in it); all three must be 0;
- `health_p50_ms` / `health_p99_ms` / `health_max_ms`: answer times of the server's liveness
  check (ours `/health`, n8n's `/healthz`), GET every HEALTH_PROBE_SECONDS on one keep-alive
  connection during the load: how long an operator's probe waits while the server is saturated;
  `health_failures`: probes with no 2xx answer;
- `rss_mb`: peak resident memory of the server's process tree, sampled during load and drain;
- `cpu_ms_per_execution` / `db_cpu_ms_per_execution`: CPU time of that tree, and of the
  PostgreSQL backends serving it, over load and drain, per finished execution (steadier than
  rates on a shared machine: it is what an execution costs);
- `other_cpu_cores`: cores used meanwhile by everything else on the machine (not the server,
  its backends or this harness): well above 0, other work competed with the run.

Executions of a level are those created at or after its first request; levels run one after
another, each after the previous one drained, so nothing overlaps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress
from pathlib import Path
from typing import Final

import asyncpg
import msgspec

from bench.e2e_load import (
    LoadResult,
    ProbeResult,
    Request,
    post_once,
    probe_health,
    run_load,
    run_paced_load,
)
from bench.e2e_processes import HOST, CpuAccount, CpuUse, MemorySampler

WEBHOOK_LIVE_TIMEOUT_SECONDS: Final = 120.0
DRAIN_TIMEOUT_SECONDS: Final = 600.0
# A drain with no execution finishing for this long is over: the rest are lost.
DRAIN_STALL_SECONDS: Final = 20.0
DRAIN_POLL_SECONDS: Final = 0.25
HEALTH_PROBE_SECONDS: Final = 0.1
# Bound on requests per phase, far above what either server answers in the phase.
MAX_REQUESTS_PER_SECOND: Final = 20_000
DATABASE_PIDS: Final = """
SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""

Say = Callable[[str], None]


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    levels: tuple[int, ...]  # closed loop: clients
    duration_s: float
    warmup_s: float
    rates: tuple[float, ...] = ()  # open loop: webhooks per second


# Open loop: requests in flight at most (a server this far behind is failing the rate anyway).
MAX_IN_FLIGHT: Final = 512


def rate_label(rate: float) -> str:
    return f"{rate:g}/s"


class Tally(msgspec.Struct, frozen=True, kw_only=True):
    """A server's executions created since some instant, by state."""

    succeeded: int
    failed: int
    unfinished: int
    last_finished_at: dt.datetime | None


async def database_pids(connection: asyncpg.Connection) -> list[int]:
    """The other backends on `connection`'s database: the server's pool and listeners."""
    return [row["pid"] for row in await connection.fetch(DATABASE_PIDS)]


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
    executions_per_s_with_drain: float
    response_p50_ms: float
    response_p99_ms: float
    health_p50_ms: float
    health_p99_ms: float
    health_max_ms: float
    health_failures: int
    lost: int
    failed: int
    unrecorded: int
    rss_mb: float
    drain_lag_s: float
    accepted: int
    refused: int
    accepted_per_s: float
    cpu_ms_per_execution: float
    db_cpu_ms_per_execution: float
    other_cpu_cores: float


class Server(ABC):
    """One system under test: a child process with a webhook-triggered workflow."""

    name: str
    port: int
    accepted_statuses: frozenset[int]  # answers that mean "the event is durable"
    health_path: str  # the liveness check (no database), probed during each level

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
    async def database_pids(self) -> list[int]:
        """PostgreSQL backends connected to the server's database (not the harness's own)."""

    @abstractmethod
    async def tally(self, since: dt.datetime) -> Tally: ...

    @abstractmethod
    async def unrecorded(self, since: dt.datetime) -> int:
        """Successful executions since `since` whose record is incomplete (steps, data)."""

    @abstractmethod
    async def succeeded_between(self, start: dt.datetime, end: dt.datetime) -> int: ...


async def measure(server: Server, plan: Plan, say: Say) -> dict[str, LevelFigures]:
    """Warm up, then one load per level (closed loops, then open ones), each drained before
    the next."""
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
        figures[str(level)] = await measure_level(server, plan, clients=level)
    for rate in plan.rates:
        say(f"{server.name}: {rate_label(rate)} open loop, {plan.duration_s:.0f} s")
        figures[rate_label(rate)] = await measure_level(server, plan, rate=rate)
    return figures


async def measure_level(
    server: Server, plan: Plan, *, clients: int | None = None, rate: float | None = None
) -> LevelFigures:
    """One level: `clients` closed-loop clients, or an open loop at `rate` per second."""
    label = f"c{clients}" if clients is not None else f"r{rate:g}"
    memory = MemorySampler(server.process_ids())
    cpu = CpuAccount(server.process_ids())
    sampling = asyncio.create_task(memory.run())
    health = ProbeResult()
    try:
        since = dt.datetime.now(dt.UTC)
        cpu.start(await server.database_pids())
        probing = asyncio.create_task(
            probe_health(
                HOST, server.port, server.health_path,
                interval_s=HEALTH_PROBE_SECONDS, result=health,
            )
        )  # fmt: skip
        try:
            load = await run_level_load(server, plan, label, clients=clients, rate=rate)
        finally:
            probing.cancel()
            with suppress(asyncio.CancelledError):
                await probing
        tally = await drain(server, since, load.accepted)
        used = cpu.stop(await server.database_pids())
    finally:
        sampling.cancel()
        with suppress(asyncio.CancelledError):
            await sampling
    for sample in load.samples:
        print(f"{server.name} {label}: {sample}", file=sys.stderr)
    return await figures_of(server, load, tally, health, since=since, memory=memory, used=used)


async def run_level_load(
    server: Server, plan: Plan, label: str, *, clients: int | None, rate: float | None
) -> LoadResult:
    """The level's webhooks: an open loop at `rate`, else `clients` closed-loop clients."""
    if rate is not None:
        return await run_paced_load(
            HOST, server.port, lambda n: server.request(label, n),
            rate=rate, duration_s=plan.duration_s, max_in_flight=MAX_IN_FLIGHT,
            accepted_statuses=server.accepted_statuses,
        )  # fmt: skip
    return await run_load(
        HOST, server.port, lambda n: server.request(label, n),
        concurrency=clients or 1, duration_s=plan.duration_s,
        max_requests=int(plan.duration_s * MAX_REQUESTS_PER_SECOND) + 1,
        accepted_statuses=server.accepted_statuses,
    )  # fmt: skip


async def figures_of(
    server: Server,
    load: LoadResult,
    tally: Tally,
    health: ProbeResult,
    *,
    since: dt.datetime,
    memory: MemorySampler,
    used: CpuUse,
) -> LevelFigures:
    window_s = load.stopped_at - load.started_at
    succeeded = await server.succeeded_between(
        dt.datetime.fromtimestamp(load.started_at, dt.UTC),
        dt.datetime.fromtimestamp(load.stopped_at, dt.UTC),
    )
    unrecorded = await server.unrecorded(since)
    last = tally.last_finished_at
    finished = max(1, tally.succeeded + tally.failed)
    span_s = max(window_s, (last.timestamp() if last else load.stopped_at) - load.started_at)
    return LevelFigures(
        executions_per_s=round(succeeded / window_s, 1),
        executions_per_s_with_drain=round(tally.succeeded / span_s, 1),
        response_p50_ms=round(percentile(load.latencies_ms, 50), 2),
        response_p99_ms=round(percentile(load.latencies_ms, 99), 2),
        health_p50_ms=round(percentile(health.latencies_ms, 50), 2),
        health_p99_ms=round(percentile(health.latencies_ms, 99), 2),
        health_max_ms=round(max(health.latencies_ms, default=0.0), 2),
        health_failures=health.failures,
        lost=max(0, load.accepted - tally.succeeded),
        failed=tally.failed,
        unrecorded=unrecorded,
        rss_mb=round(memory.peak_bytes / 2**20, 1),
        drain_lag_s=round(max(0.0, last.timestamp() - load.stopped_at) if last else 0.0, 2),
        accepted=load.accepted,
        refused=load.refused + load.errors,
        accepted_per_s=round(load.accepted / window_s, 1),
        cpu_ms_per_execution=round(1000 * used.server_s / finished, 2),
        db_cpu_ms_per_execution=round(1000 * used.database_s / finished, 2),
        other_cpu_cores=round(used.other_s / used.wall_s, 2),
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


def percentile(values: list[float], pct: int) -> float:
    """The `pct`-th percentile (inclusive method); 0 for fewer than two values."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]
