"""What the benchmark commands share: the default server, progress lines and the event loop.

Each benchmark (`bench.e2e`, `bench.handoff`, `bench.flow`) is a command that prints its figures
on standard output (a table, or one JSON object with `--json`) and its progress on standard
error, runs against the PostgreSQL server of `--dsn`, and warns when other work keeps more than
BUSY_CORES cores busy, since every figure then comes out low.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

DEFAULT_DSN: Final = "postgresql://postgres@127.0.0.1:5432"
# Cores kept busy by other work (before a run, or `other_cpu_cores` during it) worth a note.
BUSY_CORES: Final = 0.5

T = TypeVar("T")


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
