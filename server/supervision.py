"""Long-running role loops that never die silently.

A role starts its loops with `start_supervised`; when a loop ends with an exception (or returns
while it should run forever), the crash is logged and `on_crash` is called, which the process
turns into a shutdown with a non-zero exit code, so an orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)

CrashHandler = Callable[[str, BaseException], None]


class LoopExitedError(RuntimeError):
    """A loop meant to run until stopped returned on its own."""


def start_supervised(
    name: str,
    loop: Coroutine[Any, Any, None],
    *,
    on_crash: CrashHandler,
    stopping: Callable[[], bool] = lambda: False,
) -> asyncio.Task[None]:
    """Run `loop` as a task named `name`; report it to `on_crash` if it fails.

    Args:
        stopping: tells whether the owner is shutting down; a loop that returns then is fine.
    """
    task = asyncio.create_task(loop, name=name)

    def report(done: asyncio.Task[None]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            if stopping():
                return
            error = LoopExitedError(f"{name} loop exited unexpectedly")
        log.error("role_loop_crashed", loop=name, error=repr(error), exc_info=error)
        on_crash(name, error)

    task.add_done_callback(report)
    return task
