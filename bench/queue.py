"""Queue benchmark: Switchyard's queue against PgQueuer and Procrastinate on one PostgreSQL.

    python -m bench.queue [--dsn postgresql://postgres@127.0.0.1:5432/test] [--json]

Each system gets a fresh database on the server of `--dsn` (`switchyard_bench_<system>`) and
the same no-op job, job count (20,000 by default) and concurrency; see `bench/queue_common.py`
for what each figure means. Prints, per system, single and batch enqueue rate, drain rate and
idle enqueue-to-start latency p50/p99, then the ratios ours/peer (for latency, lower is
better). `--json` prints one JSON object instead:
`{"systems": {name: {"enqueue_per_s", "enqueue_batch_per_s", "drain_per_s",
"latency_p50_ms", "latency_p99_ms"}}, "ratios": {"drain_vs_pgqueuer": ..., ...}}`.
Peers are the `bench` extra of pyproject (`pip install pgqueuer==1.6.0 procrastinate`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable
from typing import Final

import msgspec
import structlog

from bench.queue_common import Figures, Plan, QueueSystem, fresh_database, measure
from bench.queue_peers import PgQueuerQueue, ProcrastinateQueue
from bench.queue_switchyard import SwitchyardQueue

DEFAULT_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"
OURS: Final = "switchyard"
SYSTEMS: Final[dict[str, type[QueueSystem]]] = {
    "switchyard": SwitchyardQueue,
    "pgqueuer": PgQueuerQueue,
    "procrastinate": ProcrastinateQueue,
}
# Figure name -> the short name used in ratio keys ("drain_vs_pgqueuer").
RATIO_NAMES: Final = {
    "enqueue_per_s": "enqueue",
    "enqueue_batch_per_s": "enqueue_batch",
    "drain_per_s": "drain",
    "latency_p50_ms": "latency_p50",
    "latency_p99_ms": "latency_p99",
}


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.queue", description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="server to create databases on")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10, help="handler slots per worker")
    parser.add_argument("--batch-size", type=int, default=1_000, help="jobs per batch enqueue")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


async def run(arguments: argparse.Namespace) -> dict[str, Figures]:
    plan = Plan(
        jobs=arguments.jobs,
        concurrency=arguments.concurrency,
        batch_size=arguments.batch_size,
        latency_jobs=arguments.latency_jobs,
    )
    results: dict[str, Figures] = {}
    for name in arguments.systems.split(","):
        system: QueueSystem = SYSTEMS[name]()
        dsn = await fresh_database(arguments.dsn, f"switchyard_bench_{name}")
        if not arguments.json:
            print(f"measuring {name} ...", file=sys.stderr)
        results[name] = await measure(system, dsn, plan)
    return results


def ratios(results: dict[str, Figures]) -> dict[str, float]:
    """ours / peer for every figure and peer."""
    if OURS not in results:
        return {}
    ours = msgspec.structs.asdict(results[OURS])
    found = {}
    for peer, figures in results.items():
        if peer == OURS:
            continue
        for field, value in msgspec.structs.asdict(figures).items():
            found[f"{RATIO_NAMES[field]}_vs_{peer}"] = round(ours[field] / value, 3)
    return found


def render_table(results: dict[str, Figures], found: dict[str, float]) -> str:
    header = f"{'system':<14}" + "".join(f"{name:>22}" for name in RATIO_NAMES)
    lines = [header]
    for name, figures in results.items():
        cells = [
            f"{value:>22.2f}" if field.endswith("_ms") else f"{value:>22.0f}"
            for field, value in msgspec.structs.asdict(figures).items()
        ]
        lines.append(f"{name:<14}" + "".join(cells))
    lines.append("")
    lines.extend(f"{key:<32}{value:>8.2f}x" for key, value in found.items())
    return "\n".join(lines)


def quiet_logs() -> None:
    """Only warnings: the figures are the output (and --json must stay one object)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name in ("pgqueuer", "procrastinate", "PgQueuer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    quiet_logs()
    results = run_loop(run(arguments))
    found = ratios(results)
    if arguments.json:
        document = {"systems": {n: msgspec.structs.asdict(f) for n, f in results.items()}}
        print(msgspec.json.encode({**document, "ratios": found}).decode())
    else:
        print(render_table(results, found))


def run_loop(work: Awaitable[dict[str, Figures]]) -> dict[str, Figures]:
    """uvloop when installed (as uvicorn serves Switchyard), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)  # type: ignore[arg-type]
    return uvloop.run(work)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
