"""What the benchmark commands share: the default server, progress lines, the event loop and
the layout of their tables.

Each benchmark (`bench.e2e`, `bench.handoff`, `bench.flow`) is a command that prints its figures
on standard output (a table, or one JSON object with `--json`) and its progress on standard
error, runs against the PostgreSQL server of `--dsn`, and warns when other work keeps more than
BUSY_CORES cores busy, since every figure then comes out low.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, TypeVar

DEFAULT_DSN: Final = "postgresql://postgres@127.0.0.1:5432"
# Cores kept busy by other work (before a run, or `other_cpu_cores` during it) worth a note.
BUSY_CORES: Final = 0.5

T = TypeVar("T")
# A table column: its heading, the figures struct's field it shows, and the field's format
# (its width is the heading's too).
Column = tuple[str, str, str]


def progress(quiet: bool) -> Callable[[str], None]:
    """A function printing progress lines on standard error, or nothing when `quiet`."""

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    return say


def run_loop(work: Coroutine[Any, Any, T]) -> T:
    """uvloop when installed (as uvicorn serves Switchyard), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


def headings(columns: Iterable[Column]) -> str:
    """A table's headings, each right-aligned to its column's width."""
    return "".join(f"{title:>{len(fmt.format(0))}}" for title, _, fmt in columns)


def cells(figures: object, columns: Iterable[Column]) -> str:
    """One row of a table: the fields of `figures` in the columns' formats."""
    return "".join(fmt.format(getattr(figures, field)) for _, field, fmt in columns)


def competition_lines(other_cpu_cores: dict[str, float]) -> list[str]:
    """A note naming the runs (label: other processes' busy cores) during which other work
    competed for the CPU (over BUSY_CORES), since their figures then come out low."""
    busy = [label for label, cores in other_cpu_cores.items() if cores > BUSY_CORES]
    if not busy:
        return []
    return [f"note: other processes competed for the CPU during {', '.join(busy)}"]


def ratio_and_target_lines(
    ratios: dict[str, float], targets: Iterable[tuple[str, bool]]
) -> list[str]:
    """The lines after a table: each ratio ours/peer, then each target, met or MISSED."""
    lines = []
    if ratios:
        lines.append("")
        lines.extend(f"{key:<32}{value:>8.2f}x" for key, value in ratios.items())
    lines.append("")
    lines.extend(f"target {'met   ' if met else 'MISSED'}  {text}" for text, met in targets)
    return lines
