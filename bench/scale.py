"""Scaling curve: one PostgreSQL, the api role in one process, 1, 2 and 4 worker processes,
and the same through PgBouncer in transaction mode.

    python -m bench.scale [--dsn postgresql://postgres@127.0.0.1:5432] [--workers 1,2,4]
                          [--pooler-workers 4] [--duration 20] [--warmup 5] [--concurrency 32]
                          [--worker-concurrency 64] [--pool-size 16] [--pooler-pool-size 20]
                          [--json]

Each size gets a fresh database (`bench_switchyard`) and the end-to-end benchmark's set-up and
load (`bench.e2e_switchyard`, `bench.e2e_common.measure`): signed Standard Webhooks into the
three-step workflow (condition -> task_management create -> set_variables), `concurrency`
closed-loop clients for `duration` seconds after a warm-up, then the drain. The api runs alone
in one process (`--roles api`); the workers are `--roles worker` processes, each with
WORKER_CONCURRENCY and DB_POOL_MAX_SIZE as given. The PgBouncer size (`--pooler-workers`
workers, 0 for none) runs Debian's pgbouncer (`tests.support.pooler.PgBouncer`, transaction
mode, `default_pool_size` = `--pooler-pool-size`) with DATABASE_URL through it and
DATABASE_DIRECT_URL direct (LISTEN, locks, migrations).

Per size it prints:
- `exec/s`: successful executions finished in the load window per second, and `x 1 worker`,
  its ratio to the one-worker size;
- `p99 ms`: the webhook answer p99 the clients saw;
- `DB conns`: the peak of the database's backends in pg_stat_activity (sampled every 0.2 s
  over warm-up, load and drain; the harness's own connection excluded): pools, listeners and,
  through PgBouncer, its server connections;
- `DB ms/ex`: CPU time of the PostgreSQL backends serving the database per finished execution,
  read from /proc (psutil) for the backend pids pg_stat_activity lists at the level's start
  and end (what one execution costs the primary, steadier than rates on a shared machine);
  `app ms/ex`: the same for the Switchyard processes (and pgbouncer, in its size);
- `commits/ex`: transactions committed on the database (pg_stat_database.xact_commit, over the
  whole size: warm-up, load, drain and the harness's few reads) per execution: with the primary's
  commit rate, what caps throughput;
- `events`, `execs`, `tasks`, `dup tasks`: after the drain, trigger events, executions, tasks
  and executions with more than one task in the database; nothing may be lost or duplicated:
  executions == events == tasks and no duplicated task (checked, MISSED otherwise), and no
  accepted webhook lost, failed or unrecorded (`bench.e2e_common`);
- `other cores`: cores other work on the machine used meanwhile (above 0.5 the figures are low).

`--json` prints `{"sizes": {label: {figure: value}}}` instead. Progress goes to standard error;
the servers' logs stay in a temporary folder named at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final

import asyncpg
import msgspec

from bench.command import (
    BUSY_CORES,
    DEFAULT_DSN,
    Column,
    cells,
    competition_lines,
    headings,
    progress,
    ratio_and_target_lines,
    run_loop,
)
from bench.e2e_common import Plan, Say, measure
from bench.e2e_processes import busy_cores, cancelled_on_signals, exclusive_run
from bench.e2e_switchyard import DATABASE, SwitchyardServer
from bench.queue import quiet_logs
from tests.support.databases import dsn_for_database
from tests.support.pooler import PgBouncer

CONNECTION_SAMPLE_SECONDS: Final = 0.2
CONNECTIONS: Final = """
SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
"""
# Transactions committed on the database so far (cumulative; the statistics reach it within a
# second of each commit).
COMMITS: Final = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
STATISTICS_DELAY_SECONDS: Final = 1.5
# What nothing may break: every event made one execution, every execution one task.
COUNTS: Final = """
SELECT (SELECT count(*) FROM trigger_event) AS events,
       (SELECT count(*) FROM workflow_execution) AS executions,
       (SELECT count(*) FROM tasks) AS tasks,
       (SELECT count(*) FROM (SELECT execution_id FROM tasks GROUP BY execution_id
                              HAVING count(*) > 1) AS twice) AS duplicated_tasks
"""


class Size(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    workers: int
    pooler: bool


class SizeFigures(msgspec.Struct, kw_only=True):
    workers: int
    executions_per_s: float
    ratio_to_one_worker: float
    response_p99_ms: float
    db_connections_peak: int
    db_cpu_ms_per_execution: float
    app_cpu_ms_per_execution: float
    commits_per_execution: float
    events: int
    executions: int
    tasks: int
    duplicated_tasks: int
    lost: int
    failed: int
    unrecorded: int
    other_cpu_cores: float


class ScaleServer(SwitchyardServer):
    """The end-to-end benchmark's Switchyard, whose CPU also counts `extra_pids` (pgbouncer)."""

    def __init__(self, *, extra_pids: list[int], **options: Any) -> None:
        super().__init__(**options)
        self._extra_pids = extra_pids

    def process_ids(self) -> list[int]:
        return [*super().process_ids(), *self._extra_pids]


class ConnectionPeak:
    """The peak count of a database's backends, sampled until cancelled."""

    def __init__(self, connection: asyncpg.Connection, database: str) -> None:
        self._connection = connection
        self._database = database
        self.peak = 0

    async def run(self) -> None:
        while True:
            count = await self._connection.fetchval(CONNECTIONS, self._database)
            self.peak = max(self.peak, int(count))
            await asyncio.sleep(CONNECTION_SAMPLE_SECONDS)


@asynccontextmanager
async def sampled(peak: ConnectionPeak) -> AsyncIterator[None]:
    task = asyncio.create_task(peak.run())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="server to create databases on")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker process counts")
    parser.add_argument(
        "--pooler-workers", type=int, default=4,
        help="worker processes of the PgBouncer size (0: no PgBouncer size)",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per size")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up load")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    parser.add_argument(
        "--worker-concurrency", type=int, default=64, help="WORKER_CONCURRENCY of each worker"
    )
    parser.add_argument(
        "--pool-size", type=int, default=16, help="DB_POOL_MAX_SIZE of every process"
    )
    parser.add_argument(
        "--pooler-pool-size", type=int, default=20, help="PgBouncer's default_pool_size"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def sizes(arguments: argparse.Namespace) -> list[Size]:
    found = [
        Size(label=f"{n} worker{'s' if n > 1 else ''}", workers=n, pooler=False)
        for n in (int(count) for count in arguments.workers.split(","))
    ]
    if arguments.pooler_workers:
        n = arguments.pooler_workers
        found.append(Size(label=f"{n} via PgBouncer", workers=n, pooler=True))
    return found


async def run(arguments: argparse.Namespace) -> dict[str, SizeFigures]:
    plan = Plan(
        levels=(arguments.concurrency,), duration_s=arguments.duration, warmup_s=arguments.warmup
    )
    run_dir = Path(tempfile.mkdtemp(prefix="switchyard-scale-"))
    say = progress(arguments.json)
    say(f"logs in {run_dir}")
    other = await busy_cores()
    if other > BUSY_CORES:
        print(
            f"warning: other work keeps {other:.2f} cores busy: figures will be low",
            file=sys.stderr,
        )
    results: dict[str, SizeFigures] = {}
    with cancelled_on_signals():
        async with exclusive_run(arguments.dsn):
            for size in sizes(arguments):
                say(f"{size.label}: starting ...")
                folder = run_dir / size.label.replace(" ", "-")
                folder.mkdir()
                results[size.label] = await run_size(size, arguments, plan, folder, say)
    one = next((f.executions_per_s for f in results.values() if f.workers == 1), 0.0)
    for figures in results.values():
        figures.ratio_to_one_worker = round(figures.executions_per_s / one, 2) if one else 0.0
    return results


async def run_size(
    size: Size, arguments: argparse.Namespace, plan: Plan, folder: Path, say: Say
) -> SizeFigures:
    pooler = (
        PgBouncer(arguments.dsn, default_pool_size=arguments.pooler_pool_size)
        if size.pooler
        else None
    )
    try:
        server = ScaleServer(
            extra_pids=[pooler.pid] if pooler else [],
            worker_concurrency=arguments.worker_concurrency,
            pool_size=arguments.pool_size,
            worker_processes=size.workers,
            main_roles="api",
            pooled=pooler.pooled if pooler else None,
        )
        async with server.running(arguments.dsn, folder):
            watcher = await asyncpg.connect(dsn_for_database(arguments.dsn, DATABASE))
            try:
                peak = ConnectionPeak(watcher, DATABASE)
                commits_before = await watcher.fetchval(COMMITS)
                async with sampled(peak):
                    level = (await measure(server, plan, say))[str(arguments.concurrency)]
                await asyncio.sleep(STATISTICS_DELAY_SECONDS)
                commits = await watcher.fetchval(COMMITS) - commits_before
                counts = await watcher.fetchrow(COUNTS)
                if counts is None:
                    raise RuntimeError("the counts query returned no row")
            finally:
                await watcher.close()
    finally:
        if pooler is not None:
            pooler.close()
    return SizeFigures(
        workers=size.workers,
        executions_per_s=level.executions_per_s,
        ratio_to_one_worker=0.0,
        response_p99_ms=level.response_p99_ms,
        db_connections_peak=peak.peak,
        db_cpu_ms_per_execution=level.db_cpu_ms_per_execution,
        app_cpu_ms_per_execution=level.cpu_ms_per_execution,
        commits_per_execution=round(commits / max(1, counts["executions"]), 2),
        events=counts["events"],
        executions=counts["executions"],
        tasks=counts["tasks"],
        duplicated_tasks=counts["duplicated_tasks"],
        lost=level.lost,
        failed=level.failed,
        unrecorded=level.unrecorded,
        other_cpu_cores=level.other_cpu_cores,
    )


COLUMNS: Final[tuple[Column, ...]] = (
    ("exec/s", "executions_per_s", "{:>8.1f}"),
    ("x 1 worker", "ratio_to_one_worker", "{:>11.2f}"),
    ("p99 ms", "response_p99_ms", "{:>8.1f}"),
    ("DB conns", "db_connections_peak", "{:>9}"),
    ("DB ms/ex", "db_cpu_ms_per_execution", "{:>9.2f}"),
    ("app ms/ex", "app_cpu_ms_per_execution", "{:>10.2f}"),
    ("commits/ex", "commits_per_execution", "{:>11.2f}"),
    ("events", "events", "{:>7}"),
    ("execs", "executions", "{:>7}"),
    ("tasks", "tasks", "{:>7}"),
    ("dup tasks", "duplicated_tasks", "{:>10}"),
    ("other cores", "other_cpu_cores", "{:>12.2f}"),
)


def targets(results: dict[str, SizeFigures]) -> list[tuple[str, bool]]:
    checks = []
    for label, f in results.items():
        once = f.events == f.executions == f.tasks and f.duplicated_tasks == 0
        complete = f.lost == 0 and f.failed == 0 and f.unrecorded == 0
        checks.append((f"{label}: executions == events == tasks, none twice", once))
        checks.append((f"{label}: 0 lost, failed or unrecorded", complete))
    return checks


def render_table(results: dict[str, SizeFigures]) -> str:
    lines = [f"{'size':<18}{headings(COLUMNS)}"]
    lines.extend(f"{label:<18}{cells(f, COLUMNS)}" for label, f in results.items())
    lines.extend(ratio_and_target_lines({}, targets(results)))
    lines.extend(competition_lines({label: f.other_cpu_cores for label, f in results.items()}))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    quiet_logs()
    results = run_loop(run(arguments))
    if arguments.json:
        sizes_json = {label: msgspec.structs.asdict(f) for label, f in results.items()}
        print(msgspec.json.encode({"sizes": sizes_json}).decode())
    else:
        print(render_table(results))
    if not all(met for _, met in targets(results)):
        sys.exit(1)


if __name__ == "__main__":
    main()
