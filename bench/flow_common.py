"""What the fan-out benchmark measures, the same way for every system and shape.

A fan-out is one parent execution started with a list of leads that runs one child execution
(a three-step workflow) per lead and collects their outputs. Each system reads back, from its
own database once the parent ended, what the fan-out left there (`FanOut`): the parent's start,
end and status, each child's start, end and status, whether each successful child recorded its
last step, and the lead names the parent collected, in order. From those rows alone
(`figures_of`):

- `wall_s`: the parent's start to its end; `children_per_s`: successful children over it;
- `child_p50_ms` / `child_p99_ms`: a child's start to its end;
- `slot_idle_ms`: how long each of the `concurrency` slots stays empty per child, on average:
  concurrency x wall / children - the mean child duration. Children/s is about concurrency /
  (mean duration + idle): the idle part is the hand-over from one child's end to the start of
  the next (Switchyard: the ended child's job admits the next held one, whose first step's job
  is claimed; n8n: the parent's own work between calls, or waiting for a batch's slowest);
- `peak_running`: the most children between their start and their end at any instant (from
  their rows' `started_at` and `finished_at`): it may not exceed the concurrency limit. (Both
  systems write child rows before they start them: Switchyard holds a foreach's children as
  PENDING rows until a slot frees, n8n creates a batch's executions before running them; a
  child is counted from its start);
- `failed`: leads without a successful child (failed, cancelled or never created); the parent
  must succeed (`parent_succeeded`); `unrecorded`: successful children whose last step left no
  record; `out_of_order`: positions where the parent's collected outputs do not name the lead
  of that position (missing outputs included). All must be 0;
- `cpu_ms_per_child` / `db_cpu_ms_per_child`: CPU time of the server's process tree and of the
  PostgreSQL backends serving it during the fan-out, per lead; `other_cpu_cores`: cores the
  rest of the machine used meanwhile (as in `bench.e2e`).

Each measured fan-out follows an unmeasured warm-up fan-out of the same shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final, Protocol

import asyncpg
import msgspec

from bench.e2e_common import Say, percentile
from bench.e2e_processes import CpuAccount, CpuUse
from bench.e2e_switchyard import lead_fields

# A parent's start to its end, at most: n8n runs its sub-workflow calls one at a time.
FAN_OUT_TIMEOUT_SECONDS: Final = 1800.0


class Child(msgspec.Struct, frozen=True, kw_only=True):
    """One child execution's row: times in epoch seconds (None if it never started or ended)."""

    started: float | None
    finished: float | None
    succeeded: bool
    recorded: bool  # its last step's output is stored (meaningful when it succeeded)


class FanOut(msgspec.Struct, frozen=True, kw_only=True):
    """What one parent execution left in the database once it ended."""

    parent_succeeded: bool
    started: float  # epoch seconds
    finished: float
    children: list[Child]
    collected: list[str]  # the lead name in each output the parent collected, in order


class FanOutFigures(msgspec.Struct, frozen=True, kw_only=True):
    items: int
    concurrency: int  # the most children the shape lets run at once
    children: int
    wall_s: float
    children_per_s: float
    child_p50_ms: float
    child_p99_ms: float
    slot_idle_ms: float
    peak_running: int
    failed: int
    parent_succeeded: bool
    unrecorded: int
    out_of_order: int
    cpu_ms_per_child: float
    db_cpu_ms_per_child: float
    other_cpu_cores: float


class FanOutSystem(Protocol):
    """A server under test that runs fan-outs in one or more shapes."""

    def running(self, admin_dsn: str, run_dir: Path) -> AbstractAsyncContextManager[None]:
        """Fresh database, process started and the workflows published; stopped on exit."""

    def shapes(self) -> dict[str, int]:
        """The fan-out shapes it runs (their labels in the results) and each one's limit on
        children running at once."""

    async def fan_out(self, shape: str, leads: list[dict[str, Any]]) -> FanOut:
        """Run one fan-out over `leads` to its end and read back what it left."""

    def process_ids(self) -> list[int]: ...

    async def database_pids(self) -> list[int]: ...


def child_of(row: asyncpg.Record) -> Child:
    """A Child from a row with the columns started, finished, succeeded, recorded."""
    return Child(
        started=row["started"],
        finished=row["finished"],
        succeeded=row["succeeded"],
        recorded=row["recorded"],
    )


def leads(count: int) -> list[dict[str, Any]]:
    """The items of a fan-out: `count` hot leads, named "Lead 0" onwards."""
    return [lead_fields(number) for number in range(count)]


async def measure(
    system: FanOutSystem, *, items: int, warmup_items: int, say: Say
) -> dict[str, FanOutFigures]:
    """Per shape of `system`: a warm-up fan-out of `warmup_items`, then the measured one."""
    figures = {}
    for shape, concurrency in system.shapes().items():
        if warmup_items:
            say(f"{shape}: warm-up fan-out of {warmup_items} items")
            await system.fan_out(shape, leads(warmup_items))
        say(f"{shape}: fan-out of {items} items, {concurrency} at a time at most")
        cpu = CpuAccount(system.process_ids())
        cpu.start(await system.database_pids())
        found = await system.fan_out(shape, leads(items))
        used = cpu.stop(await system.database_pids())
        figures[shape] = figures_of(found, items=items, concurrency=concurrency, used=used)
    return figures


def figures_of(found: FanOut, *, items: int, concurrency: int, used: CpuUse) -> FanOutFigures:
    succeeded = [child for child in found.children if child.succeeded]
    durations = [
        1000 * (child.finished - child.started)
        for child in succeeded
        if child.started is not None and child.finished is not None
    ]
    wall_s = found.finished - found.started
    mean_ms = sum(durations) / len(durations) if durations else 0.0
    expected = [lead["name"] for lead in leads(items)]
    return FanOutFigures(
        items=items,
        concurrency=concurrency,
        children=len(found.children),
        wall_s=round(wall_s, 3),
        children_per_s=round(len(succeeded) / wall_s, 1) if wall_s > 0 else 0.0,
        child_p50_ms=round(percentile(durations, 50), 2),
        child_p99_ms=round(percentile(durations, 99), 2),
        slot_idle_ms=round(1000 * concurrency * wall_s / max(1, len(succeeded)) - mean_ms, 2),
        peak_running=peak_overlap([(child.started, child.finished) for child in found.children]),
        failed=items - len(succeeded),
        parent_succeeded=found.parent_succeeded,
        unrecorded=sum(1 for child in succeeded if not child.recorded),
        out_of_order=sum(
            1 for want, got in itertools.zip_longest(expected, found.collected) if want != got
        ),
        cpu_ms_per_child=round(1000 * used.server_s / max(1, items), 3),
        db_cpu_ms_per_child=round(1000 * used.database_s / max(1, items), 3),
        other_cpu_cores=round(used.other_s / used.wall_s, 2),
    )


def peak_overlap(spans: Sequence[tuple[float | None, float | None]]) -> int:
    """The most spans open at one instant; a span ending when another starts does not overlap
    it, and a span never started does not count."""
    edges = sorted(
        edge
        for start, end in spans
        if start is not None
        for edge in ((start, 1), (end if end is not None else float("inf"), -1))
    )  # at equal times the end (-1) sorts before the start
    peak = open_now = 0
    for _, change in edges:
        open_now += change
        peak = max(peak, open_now)
    return peak
