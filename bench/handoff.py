"""Step hand-off benchmark: how fast the runtime passes one step to the next within an execution.

    python -m bench.handoff [--dsn postgresql://postgres@127.0.0.1:5432] [--steps 20]
                            [--runs 50] [--warmup 3] [--json]
                            [--worker-concurrency 256] [--pool-size 32]

No peer: this is an internal figure of the workflow runtime, to compare one commit of
Switchyard with another (before and after a change to the runtime), not Switchyard with another
system. One `switchyard run` (api and worker roles) starts as in `bench/e2e_switchyard.py`, on
a fresh `bench_switchyard` database of the `--dsn` server, and gets a published workflow that
is a linear chain of `--steps` cheap built-in steps doing no outbound I/O (a `condition` on
`true`, then `set_variables`, alternating). After `--warmup` unmeasured runs, two phases of
manual runs (`POST /api/v1/workflows/{id}/run`, no trigger needed):

- sequential: `--runs` executions one at a time, each started once the previous finished;
- concurrent: `--runs` executions fired at once, timed from the first request to the last
  execution's `finished_at`.

Figures per phase, all read from the database rows of the phase's executions:

- `handoff_p50_ms` / `handoff_p99_ms`: a step's `started_at` minus the previous step's
  `finished_at`, over every consecutive pair. Caveat: the runtime stamps these inside its own
  transactions (at 79cac2b a chained step's `started_at` is `clock_timestamp()` in the previous
  step's settling transaction, whose `now()` is that step's `finished_at`), so the gap shows
  only the part of the hand-off between those two stamps, and the rest (commit, the next
  step's start) counts in the next step's own duration; compare it across commits together
  with `per_step_ms` and the wall times, which do not depend on where a step's stamps are taken;
- `per_step_ms`: p50 over executions of the chain's span (first step's `started_at` to last
  step's `finished_at`) over `--steps`: a step and its hand-off, however they are stamped;
- `wall_p50_ms` / `wall_p99_ms`: `workflow_execution.finished_at - created_at`;
- `first_step_p50_ms`: from the execution's `created_at` to its first step's `started_at`;
- `executions_per_s` (and `steps_per_s`): executions of the phase over its duration; in the
  sequential phase the duration includes the API call and this harness's polling;
- `failed`: executions not SUCCESS or without `--steps` successful steps (must be 0).

`other_cpu_cores` is what the rest of the machine used meanwhile (as in `bench.e2e`): well
above 0, other work competed with the run. `--json` prints one object:
`{"steps": 20, "runs": 50, "sequential": {figure: value}, "concurrent": {...},
"other_cpu_cores": 0.1}`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Final

import msgspec

from bench.command import (
    BUSY_CORES,
    DEFAULT_DSN,
    Column,
    cells,
    headings,
    progress,
    run_loop,
)
from bench.e2e_common import percentile
from bench.e2e_processes import CpuAccount, busy_cores, cancelled_on_signals, exclusive_run
from bench.e2e_switchyard import DEFAULT_POOL_SIZE, DEFAULT_WORKER_CONCURRENCY
from bench.manual_runs import ManualRunServer
from bench.queue import quiet_logs

# Sequential runs: the next starts once this harness sees the previous one finished.
SEQUENTIAL_POLL_SECONDS: Final = 0.005
CONCURRENT_POLL_SECONDS: Final = 0.05

EXECUTIONS: Final = """
SELECT e.status = 'SUCCESS' AND (SELECT count(*) FROM step_execution s
                                 WHERE s.execution_id = e.id AND s.status = 'SUCCESS') = $2
           AS complete,
       extract(epoch FROM e.finished_at - e.created_at)::float8 * 1000 AS wall_ms,
       extract(epoch FROM (SELECT min(s.started_at) FROM step_execution s
                           WHERE s.execution_id = e.id) - e.created_at)::float8 * 1000
           AS first_step_ms,
       extract(epoch FROM (SELECT max(s.finished_at) - min(s.started_at) FROM step_execution s
                           WHERE s.execution_id = e.id))::float8 * 1000 AS chain_ms,
       extract(epoch FROM e.finished_at)::float8 AS finished
FROM workflow_execution e WHERE e.id = ANY($1::uuid[])
"""
# A linear chain: each step's predecessor is the one started just before it.
HANDOFF_GAPS: Final = """
SELECT gap_ms FROM (
    SELECT extract(epoch FROM started_at - lag(finished_at) OVER (
               PARTITION BY execution_id ORDER BY started_at))::float8 * 1000 AS gap_ms
    FROM step_execution WHERE execution_id = ANY($1::uuid[])
) gaps WHERE gap_ms IS NOT NULL
"""


class PhaseFigures(msgspec.Struct, frozen=True, kw_only=True):
    executions: int
    failed: int
    handoff_p50_ms: float
    handoff_p99_ms: float
    wall_p50_ms: float
    wall_p99_ms: float
    per_step_ms: float
    first_step_p50_ms: float
    executions_per_s: float
    steps_per_s: float


class Results(msgspec.Struct, frozen=True, kw_only=True):
    steps: int
    runs: int
    sequential: PhaseFigures
    concurrent: PhaseFigures
    other_cpu_cores: float


def chain(steps: int) -> dict[str, Any]:
    """The workflow document: `steps` steps in a line, condition and set_variables in turn."""
    keys = [f"s{index:03d}" for index in range(steps)]
    document_steps: list[dict[str, Any]] = [
        {"key": key, "kind": "condition", "cfg": {"expression": "true"}}
        if index % 2 == 0
        else {
            "key": key,
            "kind": "action",
            "action_key": "set_variables",
            "cfg": {"values": {"step": index}},
        }
        for index, key in enumerate(keys)
    ]
    edges = [
        {"from": before, "to": after, "branch_key": "true" if index % 2 == 0 else "default"}
        for index, (before, after) in enumerate(itertools.pairwise(keys))
    ]
    return {
        "name": f"Benchmark: {steps}-step hand-off chain",
        "description": "condition true and set_variables, alternating (bench/handoff.py)",
        "steps": document_steps,
        "edges": edges,
    }


class HandoffServer(ManualRunServer):
    """`switchyard run` as bench.e2e starts it, set up with the chain instead of a webhook."""

    def __init__(self, *, steps: int, worker_concurrency: int, pool_size: int) -> None:
        super().__init__(worker_concurrency=worker_concurrency, pool_size=pool_size)
        self.steps = steps
        self.workflow_id = ""

    async def set_up_workflows(self) -> None:
        self.workflow_id = await self.import_workflow(chain(self.steps))

    async def start_run(self) -> uuid.UUID:
        return await self.run_workflow(self.workflow_id, {})

    async def figures(self, ids: list[uuid.UUID], started: float, ended: float) -> PhaseFigures:
        """The phase's figures from its executions' rows, over the time from `started` to
        `ended` or the last execution's finish, whichever is later (epoch seconds)."""
        rows = await self._connection.fetch(EXECUTIONS, ids, self.steps)
        gaps = [row["gap_ms"] for row in await self._connection.fetch(HANDOFF_GAPS, ids)]
        walls = [row["wall_ms"] for row in rows]
        duration_s = max(ended, *(row["finished"] for row in rows)) - started
        return PhaseFigures(
            executions=len(rows),
            failed=sum(1 for row in rows if not row["complete"]),
            handoff_p50_ms=round(percentile(gaps, 50), 3),
            handoff_p99_ms=round(percentile(gaps, 99), 3),
            wall_p50_ms=round(percentile(walls, 50), 2),
            wall_p99_ms=round(percentile(walls, 99), 2),
            per_step_ms=round(percentile([row["chain_ms"] for row in rows], 50) / self.steps, 3),
            first_step_p50_ms=round(percentile([row["first_step_ms"] for row in rows], 50), 2),
            executions_per_s=round(len(rows) / duration_s, 1),
            steps_per_s=round(len(rows) * self.steps / duration_s, 1),
        )


async def sequential(server: HandoffServer, runs: int) -> PhaseFigures:
    ids = []
    started = time.time()
    for _ in range(runs):
        ids.append(await server.start_run())
        await server.wait_finished(ids[-1:], SEQUENTIAL_POLL_SECONDS)
    return await server.figures(ids, started, time.time())


async def concurrent(server: HandoffServer, runs: int) -> PhaseFigures:
    started = time.time()
    ids = list(await asyncio.gather(*(server.start_run() for _ in range(runs))))
    await server.wait_finished(ids, CONCURRENT_POLL_SECONDS)
    return await server.figures(ids, started, started)


async def run(arguments: argparse.Namespace) -> Results:
    say = progress(arguments.json)
    run_dir = Path(tempfile.mkdtemp(prefix="switchyard-handoff-"))
    say(f"logs in {run_dir}")
    if (other := await busy_cores()) > BUSY_CORES:
        print(f"warning: other work keeps {other:.2f} cores busy", file=sys.stderr)
    server = HandoffServer(
        steps=arguments.steps,
        worker_concurrency=arguments.worker_concurrency,
        pool_size=arguments.pool_size,
    )
    with cancelled_on_signals():
        async with exclusive_run(arguments.dsn), server.running(arguments.dsn, run_dir):
            say(f"warm-up: {arguments.warmup} runs of {arguments.steps} steps")
            for _ in range(arguments.warmup):
                await server.wait_finished([await server.start_run()], SEQUENTIAL_POLL_SECONDS)
            cpu = CpuAccount(server.process_ids())
            cpu.start(await server.database_pids())
            say(f"sequential: {arguments.runs} runs")
            one_by_one = await sequential(server, arguments.runs)
            say(f"concurrent: {arguments.runs} runs at once")
            at_once = await concurrent(server, arguments.runs)
            used = cpu.stop(await server.database_pids())
    return Results(
        steps=arguments.steps,
        runs=arguments.runs,
        sequential=one_by_one,
        concurrent=at_once,
        other_cpu_cores=round(used.other_s / used.wall_s, 2),
    )


COLUMNS: Final[tuple[Column, ...]] = (
    ("execs", "executions", "{:>7}"),
    ("failed", "failed", "{:>7}"),
    ("handoff p50", "handoff_p50_ms", "{:>12.3f}"),
    ("p99", "handoff_p99_ms", "{:>9.3f}"),
    ("wall p50", "wall_p50_ms", "{:>10.2f}"),
    ("p99", "wall_p99_ms", "{:>9.2f}"),
    ("ms/step", "per_step_ms", "{:>9.3f}"),
    ("1st step", "first_step_p50_ms", "{:>9.2f}"),
    ("exec/s", "executions_per_s", "{:>8.1f}"),
    ("steps/s", "steps_per_s", "{:>9.1f}"),
)


def render_table(results: Results) -> str:
    lines = [
        f"{results.steps} steps per execution, {results.runs} executions per phase; times in ms",
        f"{'phase':<12}{headings(COLUMNS)}",
    ]
    for name in ("sequential", "concurrent"):
        lines.append(f"{name:<12}{cells(getattr(results, name), COLUMNS)}")
    lines.append(f"other cores busy meanwhile: {results.other_cpu_cores:.2f}")
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.handoff", description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="server to create the database on")
    parser.add_argument("--steps", type=int, default=20, help="steps in the chain (2 or more)")
    parser.add_argument("--runs", type=int, default=50, help="executions per phase (2 or more)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs first")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--worker-concurrency", type=int, default=DEFAULT_WORKER_CONCURRENCY,
        help="Switchyard's WORKER_CONCURRENCY",
    )  # fmt: skip
    parser.add_argument(
        "--pool-size", type=int, default=DEFAULT_POOL_SIZE, help="Switchyard's DB_POOL_MAX_SIZE"
    )
    arguments = parser.parse_args(argv)
    if arguments.steps < 2 or arguments.runs < 2:
        parser.error("--steps and --runs must be 2 or more")
    return arguments


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    quiet_logs()
    results = run_loop(run(arguments))
    if arguments.json:
        print(msgspec.json.encode(results).decode())
    else:
        print(render_table(results))


if __name__ == "__main__":
    main()
