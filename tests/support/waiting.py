"""Waiting in tests: `eventually` polls until a condition holds; `eventually_sync` is the same
for blocking code (a thread, a synchronous test).

Tests never sleep to wait for work. `eventually(probe, what=...)` calls `probe` (awaiting its
result when it is awaitable) every `every` seconds until the value it returns is truthy, or
until `until(value)` holds when a test passes `until`, and returns that value. After `within`
seconds it raises AssertionError naming `what` and showing the last value seen, so a timeout says
what was awaited and how far things got. An exception raised by `probe` ends the wait at once.
A test asserting that something does NOT happen waits for a sign that it no longer can (the
queue empty, the late worker reporting its lost lease) rather than for a fixed time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, overload

T = TypeVar("T")

WAIT_SECONDS: Final = 10.0
POLL_EVERY_SECONDS: Final = 0.02
SHOWN_CHARACTERS: Final = 2000  # of the last value, in a timeout's message


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], object],
    what: str,
    within: float = ...,
    every: float = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, what: str, within: float = ..., every: float = ...
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    *,
    until: Callable[[T], object],
    what: str,
    within: float = ...,
    every: float = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T | None], *, what: str, within: float = ..., every: float = ...
) -> T: ...


async def eventually(
    probe: Callable[[], object],
    *,
    until: Callable[..., object] = bool,
    what: str,
    within: float = WAIT_SECONDS,
    every: float = POLL_EVERY_SECONDS,
) -> object:
    """Poll `probe` until `until(value)` holds (by default: the value is truthy); return the
    value, or raise AssertionError naming `what` and the last value after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(what, within, value))
        await asyncio.sleep(every)


@overload
def eventually_sync(
    probe: Callable[[], T],
    *,
    until: Callable[[T], object],
    what: str,
    within: float = ...,
    every: float = ...,
) -> T: ...


@overload
def eventually_sync(
    probe: Callable[[], T | None], *, what: str, within: float = ..., every: float = ...
) -> T: ...


def eventually_sync(
    probe: Callable[[], object],
    *,
    until: Callable[..., object] = bool,
    what: str,
    within: float = WAIT_SECONDS,
    every: float = POLL_EVERY_SECONDS,
) -> object:
    """`eventually` for blocking code (a thread, a synchronous test): the same contract."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(what, within, value))
        time.sleep(every)


def _timed_out(what: str, within: float, value: object) -> str:
    shown = repr(value)
    if len(shown) > SHOWN_CHARACTERS:
        shown = shown[:SHOWN_CHARACTERS] + "..."
    return f"{what}: not reached within {within} s; last seen: {shown}"
