"""Fan-out benchmark: one parent execution running a three-step child workflow per item, Switchyard
against n8n.

    python -m bench.flow [--dsn postgresql://postgres@127.0.0.1:5432] [--items 1000]
                         [--max-concurrency 20] [--warmup-items 50]
                         [--shapes switchyard,n8n,n8n-http] [--no-peer] [--json]
                         [--worker-concurrency 256] [--pool-size 32] [--n8n-pool-size 10]

On loopback, each system on the PostgreSQL server of `--dsn` in a fresh database, one after the
other. Switchyard (`bench/flow_switchyard.py`): a manual run of a parent whose `foreach` step
starts one child execution per lead, at most `--max-concurrency` unfinished at once, and
collects their outputs. n8n 2.8.4 (`bench/flow_n8n.py`) in two shapes:

- `n8n`: Execute Workflow, "run once for each item", waiting for each sub-workflow: n8n's own
  construct for calling a workflow per item. It runs them one after another (it has no
  setting to run them side by side), so this shape has a concurrency of 1;
- `n8n-http`: Loop Over Items in batches of `--max-concurrency` -> HTTP Request to a child
  workflow's webhook, all the items of a batch at once, the next batch once the whole batch
  answered: the nearest n8n gets to a bounded fan-out.

Every child (a condition on the lead's score, then two steps shaping it; no outbound I/O) is
the same work on both. Figures per shape, each read from the systems' own rows once the parent
ended (`bench/flow_common.py` says how): `children_per_s` (successful children over the
parent's start to its end), `wall_s`, child duration p50/p99, how long a concurrency slot stays
empty per child, the peak of children running at once (never above the limit), `failed`
children, `unrecorded` children and `out_of_order` collected outputs (all must be 0), CPU per
child of the server and of its database backends, and the cores other work took meanwhile.
Then ours/n8n per n8n shape, and the targets (met or MISSED): nothing lost or out of order,
the concurrency limit kept, and at least 3x the children/s of the faster n8n shape. Progress
goes to standard error; the servers' logs stay in a temporary folder named at the start.

`--json` prints one object: `{"items": 1000, "max_concurrency": 20, "systems": {"switchyard":
{figure: value}, "n8n": {...}, "n8n-http": {...}}, "ratios": {"children_per_s_vs_n8n": 5.1,
"cpu_per_child_vs_n8n": 0.4, ... "_vs_n8n_http": ...}, "targets": {text: met}}`. With
`--no-peer` only Switchyard runs and `ratios` is empty.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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
from bench.e2e_n8n import DEFAULT_CACHE
from bench.e2e_n8n import DEFAULT_POOL_SIZE as N8N_POOL_SIZE
from bench.e2e_processes import busy_cores, cancelled_on_signals, exclusive_run
from bench.e2e_switchyard import DEFAULT_POOL_SIZE, DEFAULT_WORKER_CONCURRENCY
from bench.flow_common import FanOutFigures, FanOutSystem, measure
from bench.flow_n8n import SHAPES as N8N_SHAPES
from bench.flow_n8n import FlowN8n
from bench.flow_switchyard import FlowSwitchyard
from bench.queue import quiet_logs

OURS: Final = "switchyard"
MIN_CHILDREN_RATIO: Final = 3.0  # issue 14: at least 3x n8n's children/s
MAX_ITEMS: Final = 10_000  # DESIGN §5.1: a foreach takes at most 10,000 items

Results = dict[str, FanOutFigures]  # shape -> figures


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.flow", description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="server to create databases on")
    parser.add_argument("--items", type=int, default=1000, help="leads (children) per fan-out")
    parser.add_argument(
        "--max-concurrency", type=int, default=20,
        help="the foreach's max_concurrency, and n8n-http's batch size",
    )  # fmt: skip
    parser.add_argument(
        "--warmup-items", type=int, default=50, help="items of the unmeasured first fan-out"
    )
    parser.add_argument(
        "--shapes", default=",".join([OURS, *N8N_SHAPES]),
        help="comma-separated subset of the shapes to run",
    )  # fmt: skip
    parser.add_argument("--no-peer", action="store_true", help="run Switchyard alone")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--worker-concurrency", type=int, default=DEFAULT_WORKER_CONCURRENCY,
        help="Switchyard's WORKER_CONCURRENCY",
    )  # fmt: skip
    parser.add_argument(
        "--pool-size", type=int, default=DEFAULT_POOL_SIZE, help="Switchyard's DB_POOL_MAX_SIZE"
    )
    parser.add_argument(
        "--n8n-pool-size", type=int, default=N8N_POOL_SIZE, help="n8n's DB_POSTGRESDB_POOL_SIZE"
    )
    parser.add_argument(
        "--n8n-cache", type=Path, default=DEFAULT_CACHE, help="where n8n is installed once"
    )
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.items <= MAX_ITEMS or arguments.max_concurrency < 1:
        parser.error(f"--items takes 1 to {MAX_ITEMS}; --max-concurrency 1 or more")
    arguments.shapes = [shape for shape in arguments.shapes.split(",") if shape]
    unknown = set(arguments.shapes) - {OURS, *N8N_SHAPES}
    if unknown:
        parser.error(
            f"unknown shapes {sorted(unknown)}; choose from {OURS}, {', '.join(N8N_SHAPES)}"
        )
    if arguments.no_peer:
        arguments.shapes = [shape for shape in arguments.shapes if shape == OURS]
    return arguments


def make_systems(arguments: argparse.Namespace) -> list[FanOutSystem]:
    """Switchyard, then n8n with the n8n shapes asked for."""
    say = progress(arguments.json)
    systems: list[FanOutSystem] = []
    if OURS in arguments.shapes:
        systems.append(
            FlowSwitchyard(
                max_concurrency=arguments.max_concurrency,
                worker_concurrency=arguments.worker_concurrency,
                pool_size=arguments.pool_size,
            )
        )
    peer_shapes = [shape for shape in arguments.shapes if shape in N8N_SHAPES]
    if peer_shapes:
        systems.append(
            FlowN8n(
                cache=arguments.n8n_cache,
                pool_size=arguments.n8n_pool_size,
                batch_size=arguments.max_concurrency,
                shapes=peer_shapes,
                say=say,
            )
        )
    return systems


async def run(arguments: argparse.Namespace) -> Results:
    say = progress(arguments.json)
    run_dir = Path(tempfile.mkdtemp(prefix="switchyard-flow-"))
    say(f"logs in {run_dir}")
    if (other := await busy_cores()) > BUSY_CORES:
        print(f"warning: other work keeps {other:.2f} cores busy", file=sys.stderr)
    results: Results = {}
    with cancelled_on_signals():
        async with exclusive_run(arguments.dsn):
            for system in make_systems(arguments):
                async with system.running(arguments.dsn, run_dir):
                    results |= await measure(
                        system, items=arguments.items, warmup_items=arguments.warmup_items, say=say
                    )
    return results


def ratios(results: Results) -> dict[str, float]:
    """ours / each n8n shape: children/s, and CPU per child (server and database)."""
    ours = results.get(OURS)
    found: dict[str, float] = {}
    if ours is None:
        return found
    for shape, theirs in results.items():
        if shape == OURS:
            continue
        name = shape.replace("-", "_")
        found[f"children_per_s_vs_{name}"] = share(ours.children_per_s, theirs.children_per_s)
        found[f"cpu_per_child_vs_{name}"] = share(cpu_per_child(ours), cpu_per_child(theirs))
    return found


def share(ours: float, theirs: float) -> float:
    return round(ours / theirs, 3) if theirs else float("inf")


def cpu_per_child(figures: FanOutFigures) -> float:
    return figures.cpu_ms_per_child + figures.db_cpu_ms_per_child


def targets(results: Results) -> dict[str, bool]:
    """Each target of issue 14's fan-out, and whether this run met it."""
    ours = results.get(OURS)
    if ours is None:
        return {}
    checks = {
        f"{ours.children} children of {ours.items}, {ours.failed} failed, {ours.unrecorded} "
        f"unrecorded, {ours.out_of_order} outputs out of order, parent "
        f"{'succeeded' if ours.parent_succeeded else 'FAILED'}": (
            ours.children == ours.items
            and ours.failed == ours.unrecorded == ours.out_of_order == 0
            and ours.parent_succeeded
        ),
        f"at most {ours.concurrency} children running at once (peak {ours.peak_running})": (
            ours.peak_running <= ours.concurrency
        ),
    }
    peers = {shape: figures for shape, figures in results.items() if shape != OURS}
    if peers:
        fastest = max(peers, key=lambda shape: peers[shape].children_per_s)
        speedup = share(ours.children_per_s, peers[fastest].children_per_s)
        checks[
            f"children/s {speedup:.2f}x the faster n8n shape ({fastest}) >= "
            f"{MIN_CHILDREN_RATIO:.0f}x"
        ] = speedup >= MIN_CHILDREN_RATIO
    return checks


# Table columns: heading, FanOutFigures field, format.
COLUMNS: Final[tuple[Column, ...]] = (
    ("limit", "concurrency", "{:>6}"),
    ("children", "children", "{:>9}"),
    ("wall s", "wall_s", "{:>8.2f}"),
    ("children/s", "children_per_s", "{:>11.1f}"),
    ("child p50", "child_p50_ms", "{:>10.2f}"),
    ("p99", "child_p99_ms", "{:>8.2f}"),
    ("slot idle", "slot_idle_ms", "{:>10.2f}"),
    ("peak run", "peak_running", "{:>9}"),
    ("failed", "failed", "{:>7}"),
    ("unrec", "unrecorded", "{:>6}"),
    ("order", "out_of_order", "{:>6}"),
    ("CPU ms/ch", "cpu_ms_per_child", "{:>10.2f}"),
    ("DB ms/ch", "db_cpu_ms_per_child", "{:>9.2f}"),
    ("other cores", "other_cpu_cores", "{:>12.2f}"),
)


def render_table(results: Results, found: dict[str, float], checks: dict[str, bool]) -> str:
    items = next(iter(results.values())).items if results else 0
    lines = [
        f"fan-out of {items} items, three-step children; times in ms unless named",
        f"{'shape':<12}{headings(COLUMNS)}",
    ]
    lines.extend(f"{shape:<12}{cells(figures, COLUMNS)}" for shape, figures in results.items())
    lines.extend(ratio_and_target_lines(found, checks.items()))
    lines.extend(competition_lines({s: f.other_cpu_cores for s, f in results.items()}))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    quiet_logs()
    results = run_loop(run(arguments))
    found, checks = ratios(results), targets(results)
    if arguments.json:
        document = {
            "items": arguments.items,
            "max_concurrency": arguments.max_concurrency,
            "systems": results,
            "ratios": found,
            "targets": checks,
        }
        print(msgspec.json.encode(document).decode())
    else:
        print(render_table(results, found, checks))


if __name__ == "__main__":
    main()
