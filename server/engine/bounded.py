"""Renders and evaluations that never hold the event loop: inline first, else on a thread.

Every template render and expression evaluation of the running server goes through here (steps,
conditions, delays, subscription filters). The first attempt runs on the event loop under a
slice of the budget (`server.engine.budget`): almost every template (`{{ trigger.name }}`) is
done within it, with no thread hop. One that needs more (or is not compiled yet) is run again on
one of RENDER_THREADS threads under the full budget, which stops it at its CPU, size and loop
limits while the loop goes on serving the API, the worker and the scheduler. Renders are pure,
so running one again is safe. WALL_SECONDS bounds the wait for a thread, queue included.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from server.engine.budget import Budget, SliceSpentError
from server.engine.rendering import RenderedCfg, RenderError, evaluate, render_cfg, with_budget

RENDER_THREADS: Final = 2
WALL_SECONDS: Final = 10.0
T = TypeVar("T")


@functools.cache
def _threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=RENDER_THREADS, thread_name_prefix="render")


def _with_full_budget(function: Callable[..., T], args: tuple[Any, ...]) -> T:
    return with_budget(Budget(), function, *args)  # type: ignore[no-any-return]


async def run_bounded(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` (a render), inline under a slice, else on a render thread."""
    try:
        return with_budget(Budget(inline=True), function, *args)  # type: ignore[no-any-return]
    except SliceSpentError:
        pass
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_threads(), _with_full_budget, function, args)
    try:
        return await asyncio.wait_for(future, WALL_SECONDS)
    except TimeoutError:
        raise RenderError(
            f"template did not finish within {WALL_SECONDS:g} s (render threads busy)"
        ) from None


async def render_cfg_bounded(
    cfg: Mapping[str, Any], context: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()
) -> RenderedCfg:
    return await run_bounded(render_cfg, cfg, context, secret_keys)


async def evaluate_bounded(
    expression: str, context: Mapping[str, Any], where: str = "expression"
) -> Any:
    return await run_bounded(evaluate, expression, context, where)
