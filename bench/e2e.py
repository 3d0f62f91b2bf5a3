"""End-to-end benchmark: signed webhooks into a three-step workflow, Switchyard against n8n.

    python -m bench.e2e [--dsn postgresql://postgres@127.0.0.1:5432] [--duration 30]
                        [--warmup 10] [--concurrency 8,32] [--rates 50] [--no-peer] [--json]
                        [--worker-concurrency 256] [--pool-size 32] [--worker-processes 0]
                        [--main-roles api,worker] [--target-lag SECONDS]
                        [--otlp-endpoint http://127.0.0.1:4318]

On loopback, both systems on the PostgreSQL server of `--dsn`, each in a fresh database
(`bench_switchyard`, `bench_n8n`). Switchyard (`switchyard run`, api and worker roles) gets a
webhook endpoint with Standard Webhooks auth answering asynchronously and a published workflow
condition -> task_management create -> set_variables; n8n (installed from the npm registry into
`~/.cache/switchyard-bench/n8n` on first use) gets Webhook -> IF -> Set answering on receipt.
Both receive the same JSON bodies (n8n's unsigned) from `concurrency` closed-loop clients for
`duration` seconds per level, after a warm-up, then from an open loop at each of `--rates`
webhooks per second (the answer time at a load below both systems' capacity; a closed loop
answers at p50 = clients / throughput, so its latency mostly restates the throughput).
`bench/e2e_common.py` says what each figure
means. Prints per system and level: executions/s (in the load window, and including the drain),
accepted webhooks/s, answer p50/p99, drain lag, lost, failed and unrecorded executions, peak
RSS, CPU per execution of the server and of its database backends, and the cores other work
took meanwhile, and the answer times of a liveness probe (`/health`, n8n's `/healthz`) sent
every 100 ms during each level; then the ratios ours/n8n and the targets (met or MISSED). Progress and
warnings go to standard error; the servers' logs stay in a temporary folder named at the start.

`--json` prints one JSON object instead. Each system maps every figure to its value per level
(keys are the level labels: clients as "8", rates as "50/s"); `ratios` holds ours/n8n per
figure and level (suffix `_c8` for clients, `_r50` for a rate; for latency and memory, lower
is better):

    {"systems": {"switchyard": {"executions_per_s": {"8": 412.3, "32": 420.1, "50/s": 50.0},
                                "executions_per_s_with_drain": {...},
                                "response_p50_ms": {...}, "response_p99_ms": {...},
                                "health_p50_ms": {...}, "health_p99_ms": {...},
                                "health_max_ms": {...}, "health_failures": {...},
                                "lost": {...}, "rss_mb": {...}, "failed": {...},
                                "unrecorded": {...},
                                "drain_lag_s": {...}, "accepted": {...}, "refused": {...},
                                "accepted_per_s": {...}, "cpu_ms_per_execution": {...},
                                "db_cpu_ms_per_execution": {...}, "other_cpu_cores": {...}},
                 "n8n": {... the same keys ...}},
     "ratios": {"executions_vs_n8n_c8": 2.4, "response_p50_vs_n8n_c8": 0.1,
                "response_p99_vs_n8n_c8": ..., "health_p99_vs_n8n_c8": ...,
                "rss_vs_n8n_c8": 0.2, ... "_c32": ...,
                "response_p50_vs_n8n_r50": ...}}

With `--no-peer` only Switchyard runs and `ratios` is empty.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

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
from bench.e2e_common import LevelFigures, Plan, Server, measure
from bench.e2e_n8n import DEFAULT_CACHE, N8nServer
from bench.e2e_n8n import DEFAULT_POOL_SIZE as N8N_POOL_SIZE
from bench.e2e_processes import busy_cores, cancelled_on_signals, exclusive_run
from bench.e2e_switchyard import DEFAULT_POOL_SIZE, DEFAULT_WORKER_CONCURRENCY, SwitchyardServer
from bench.queue import quiet_logs

OURS: Final = "switchyard"
PEER: Final = "n8n"
# Figure -> the short name in ratio keys ("executions_vs_n8n_c8").
RATIO_NAMES: Final = {
    "executions_per_s": "executions",
    "response_p50_ms": "response_p50",
    "response_p99_ms": "response_p99",
    "health_p99_ms": "health_p99",
    "rss_mb": "rss",
}
# The targets of the end-to-end issue: ours/n8n executions/s, our p50, ours/n8n RSS.
MIN_EXECUTIONS_RATIO: Final = 2.0
MAX_RESPONSE_P50_MS: Final = 10.0
MAX_RSS_RATIO: Final = 1 / 3
# Issue 10: the answer p99 no worse than n8n's; the liveness check answers well under a second.
MAX_RESPONSE_P99_RATIO: Final = 1.0
MAX_HEALTH_MS: Final = 1000.0

Results = dict[str, dict[str, LevelFigures]]  # system -> level label ("8", "50/s") -> figures


def suffix(label: str) -> str:
    """A level's suffix in ratio keys and target lines: "c8" (clients), "r50" (rate)."""
    return f"r{label.removesuffix('/s')}" if label.endswith("/s") else f"c{label}"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="server to create databases on")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per level")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of warm-up load")
    parser.add_argument(
        "--concurrency", default="8,32", help="comma-separated closed-loop client counts"
    )
    parser.add_argument(
        "--rates", default="50",
        help="comma-separated open-loop rates (webhooks/s; '' for none): the answer time at a "
        "load both systems sustain, counted from when each request was due",
    )  # fmt: skip
    parser.add_argument("--no-peer", action="store_true", help="run Switchyard alone")
    parser.add_argument(
        "--systems", default=f"{OURS},{PEER}", help="comma-separated subset, in running order"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--worker-concurrency", type=int, default=DEFAULT_WORKER_CONCURRENCY,
        help="Switchyard's WORKER_CONCURRENCY",
    )  # fmt: skip
    parser.add_argument(
        "--pool-size", type=int, default=DEFAULT_POOL_SIZE, help="Switchyard's DB_POOL_MAX_SIZE"
    )
    parser.add_argument(
        "--worker-processes", type=int, default=0,
        help="extra `switchyard run --roles worker` processes beside the main one",
    )  # fmt: skip
    parser.add_argument(
        "--main-roles", default="api,worker",
        help="ROLES of the main Switchyard process (with `api`; `api` alone needs "
        "--worker-processes)",
    )  # fmt: skip
    parser.add_argument(
        "--target-lag", type=float, default=None,
        help="Switchyard's WORKER_TARGET_LAG_SECONDS (default: its own; 0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--otlp-endpoint", default=None,
        help="trace Switchyard, exporting to this OTLP/HTTP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT; "
        "`python -m bench.otlp_sink` is a discarding one); default: tracing off",
    )  # fmt: skip
    parser.add_argument(
        "--n8n-pool-size", type=int, default=N8N_POOL_SIZE, help="n8n's DB_POSTGRESDB_POOL_SIZE"
    )
    parser.add_argument(
        "--n8n-cache", type=Path, default=DEFAULT_CACHE, help="where n8n is installed once"
    )
    return parser.parse_args(argv)


async def run(arguments: argparse.Namespace) -> Results:
    plan = Plan(
        levels=tuple(int(level) for level in arguments.concurrency.split(",")),
        duration_s=arguments.duration,
        warmup_s=arguments.warmup,
        rates=tuple(float(rate) for rate in arguments.rates.split(",") if rate),
    )
    run_dir = Path(tempfile.mkdtemp(prefix="switchyard-e2e-"))
    say = progress(arguments.json)
    say(f"logs in {run_dir}")
    servers = make_servers(arguments, say)
    results: Results = {}
    other = await busy_cores()
    if other > BUSY_CORES:
        print(
            f"warning: other work keeps {other:.2f} cores busy: figures will be low",
            file=sys.stderr,
        )
    with cancelled_on_signals():
        async with exclusive_run(arguments.dsn):
            for server in servers:
                say(f"starting {server.name} ...")
                async with server.running(arguments.dsn, run_dir):
                    results[server.name] = await measure(server, plan, say)
    return results


def make_servers(arguments: argparse.Namespace, say: Callable[[str], None]) -> list[Server]:
    """The systems of `--systems` (less n8n with `--no-peer`), in running order."""
    servers: list[Server] = []
    for name in arguments.systems.split(","):
        if name == OURS:
            servers.append(
                SwitchyardServer(
                    worker_concurrency=arguments.worker_concurrency,
                    pool_size=arguments.pool_size,
                    worker_processes=arguments.worker_processes,
                    main_roles=arguments.main_roles,
                    target_lag=arguments.target_lag,
                    otlp_endpoint=arguments.otlp_endpoint,
                )
            )
        elif name == PEER and not arguments.no_peer:
            servers.append(
                N8nServer(cache=arguments.n8n_cache, pool_size=arguments.n8n_pool_size, say=say)
            )
        elif name != PEER:
            raise SystemExit(f"bench.e2e: unknown system {name!r}; choose from {OURS}, {PEER}")
    return servers


def ratios(results: Results) -> dict[str, float]:
    """ours / n8n for the compared figures at every level both ran."""
    if OURS not in results or PEER not in results:
        return {}
    found = {}
    for level, ours in results[OURS].items():
        peer = results[PEER].get(level)
        if peer is None:
            continue
        for field, short in RATIO_NAMES.items():
            theirs = getattr(peer, field)
            value = getattr(ours, field) / theirs if theirs else float("inf")
            found[f"{short}_vs_{PEER}_{suffix(level)}"] = round(value, 3)
    return found


def targets(results: Results) -> list[tuple[str, bool]]:
    """Each target of the issue at each closed-loop level, and whether this run met it; at
    open-loop levels (not the issue's), completeness and the answer p50 for information."""
    checks = []
    for level, ours in results.get(OURS, {}).items():
        name = suffix(level)
        complete = ours.lost == 0 and ours.failed == 0 and ours.unrecorded == 0
        checks.append((f"{name}: 0 lost, failed or unrecorded", complete))
        checks.append(
            (
                f"{name}: response p50 {ours.response_p50_ms:.2f} ms <= {MAX_RESPONSE_P50_MS:.0f} ms",
                ours.response_p50_ms <= MAX_RESPONSE_P50_MS,
            )
        )
        checks.append(
            (
                f"{name}: /health max {ours.health_max_ms:.1f} ms < {MAX_HEALTH_MS:.0f} ms, "
                f"{ours.health_failures} failed",
                ours.health_max_ms < MAX_HEALTH_MS and ours.health_failures == 0,
            )
        )
        peer = results.get(PEER, {}).get(level)
        if peer is None or level.endswith("/s"):
            continue
        speedup = ours.executions_per_s / peer.executions_per_s if peer.executions_per_s else 0
        checks.append(
            (
                f"{name}: executions/s {speedup:.2f}x n8n >= {MIN_EXECUTIONS_RATIO:.0f}x",
                speedup >= MIN_EXECUTIONS_RATIO and peer.executions_per_s > 0,
            )
        )
        tail = ours.response_p99_ms / peer.response_p99_ms if peer.response_p99_ms else 0
        checks.append(
            (
                f"{name}: response p99 {tail:.2f}x n8n <= {MAX_RESPONSE_P99_RATIO:.0f}x",
                0 < tail <= MAX_RESPONSE_P99_RATIO,
            )
        )
        memory = ours.rss_mb / peer.rss_mb if peer.rss_mb else float("inf")
        checks.append((f"{name}: RSS {memory:.2f}x n8n <= 1/3", memory <= MAX_RSS_RATIO))
    return checks


# Table columns: heading, LevelFigures field, format.
COLUMNS: Final[tuple[Column, ...]] = (
    ("exec/s", "executions_per_s", "{:>8.1f}"),
    ("accepted/s", "accepted_per_s", "{:>11.1f}"),
    ("+drain/s", "executions_per_s_with_drain", "{:>9.1f}"),
    ("p50 ms", "response_p50_ms", "{:>8.2f}"),
    ("p99 ms", "response_p99_ms", "{:>8.2f}"),
    ("health p50", "health_p50_ms", "{:>11.2f}"),
    ("p99", "health_p99_ms", "{:>8.2f}"),
    ("max", "health_max_ms", "{:>8.1f}"),
    ("drain s", "drain_lag_s", "{:>8.2f}"),
    ("lost", "lost", "{:>5}"),
    ("failed", "failed", "{:>7}"),
    ("unrec", "unrecorded", "{:>6}"),
    ("refused", "refused", "{:>8}"),
    ("RSS MB", "rss_mb", "{:>7.1f}"),
    ("CPU ms/ex", "cpu_ms_per_execution", "{:>10.2f}"),
    ("DB ms/ex", "db_cpu_ms_per_execution", "{:>9.2f}"),
    ("other cores", "other_cpu_cores", "{:>12.2f}"),
)


def render_table(results: Results, found: dict[str, float]) -> str:
    lines = [f"{'system':<12}{'level':>8}{headings(COLUMNS)}"]
    for name, levels in results.items():
        for level, figures in levels.items():
            lines.append(f"{name:<12}{level:>8}{cells(figures, COLUMNS)}")
    lines.extend(ratio_and_target_lines(found, targets(results)))
    lines.extend(
        competition_lines(
            {
                f"{name} {suffix(level)}": figures.other_cpu_cores
                for name, levels in results.items()
                for level, figures in levels.items()
            }
        )
    )
    return "\n".join(lines)


def document(results: Results, found: dict[str, float]) -> dict[str, object]:
    """The --json object (shape in the module docstring)."""
    systems: dict[str, dict[str, dict[str, object]]] = {}
    for name, levels in results.items():
        per_field: dict[str, dict[str, object]] = {}
        for level, figures in levels.items():
            for field, value in msgspec.structs.asdict(figures).items():
                per_field.setdefault(field, {})[level] = value
        systems[name] = per_field
    return {"systems": systems, "ratios": found}


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    quiet_logs()
    results = run_loop(run(arguments))
    found = ratios(results)
    if arguments.json:
        print(msgspec.json.encode(document(results, found)).decode())
    else:
        print(render_table(results, found))


if __name__ == "__main__":
    main()
