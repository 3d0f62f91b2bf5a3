"""The work budget of one template render or expression evaluation, counted while it runs.

The API, the worker and the scheduler share one event loop, and templates are written by users,
so a render must never run unbounded. Every operation the sandbox intercepts (attribute and item
lookups, calls, operators, filters, each loop iteration, each output) charges the budget of the
render in progress (`current_budget()`), and every value an operation builds is measured:

- a single value may not exceed `MAX_VALUE_LENGTH` characters or items, and an operation whose
  arguments would build more (`"x"|center(10**9)`, a megabyte `join` separator) is refused
  *before* it allocates;
- the values one render builds may not add up to more than `MAX_BUILT_UNITS`;
- loops may not iterate more than `MAX_LOOP_ITERATIONS` times in all;
- the render may not use more than `MAX_CPU_SECONDS` of its thread's CPU time.

A budget may also be a *slice* (`inline=True`): the first attempt of every render runs on the
event loop with a slice of a few hundred microseconds; a render that needs more raises
`SliceSpentError` and is run again off the loop with the full budget (renders are pure, so the
retry is safe). The clock read is thread CPU time, a meter of this render's own work, not the
time of day. An exceeded limit raises `TemplateLimitError`, a Jinja2 `SecurityError` whose
message names the limit and its value; once exceeded, every later charge raises again, so
nothing in the template can swallow it.
"""

from __future__ import annotations

import contextvars
import time
from typing import Final

from jinja2.exceptions import SecurityError

MAX_VALUE_LENGTH: Final = 1_000_000  # characters or items of one value
MAX_BUILT_UNITS: Final = 8_000_000  # characters or items built by one render, in all
MAX_LOOP_ITERATIONS: Final = 100_000  # loop iterations of one render, nested loops included
MAX_CPU_SECONDS: Final = 1.0  # CPU time of one render (off the event loop)
MAX_INTEGER_BITS: Final = 4096
MAX_FORMAT_WIDTH: Final = 9999  # widths and precisions in format strings and padding calls
# The inline slice: what a render may do on the event loop before it is moved to a thread.
SLICE_OPERATIONS: Final = 2_000
SLICE_BUILT_UNITS: Final = 64_000
SLICE_CPU_SECONDS: Final = 0.002
_CLOCK_EVERY: Final = 256  # operations between two reads of the CPU clock


class TemplateLimitError(SecurityError):
    """A render exceeded one of its limits; the message names the limit."""


class SliceSpentError(Exception):
    """An inline attempt used up its slice: run the render again off the event loop."""


class Budget:
    """The counters of one render; see the module docstring."""

    __slots__ = (
        "_cpu_limit", "_next_clock", "_started", "built", "exceeded", "inline", "iterations",
        "operations",
    )  # fmt: skip

    def __init__(self, *, inline: bool = False) -> None:
        self.inline = inline
        self.operations = 0
        self.built = 0
        self.iterations = 0
        self.exceeded: str | None = None
        self._started = time.thread_time()
        self._cpu_limit = SLICE_CPU_SECONDS if inline else MAX_CPU_SECONDS
        self._next_clock = _CLOCK_EVERY

    def operation(self, count: int = 1) -> None:
        """Charge `count` operations; reads the CPU clock every few hundred."""
        if self.exceeded is not None:
            raise TemplateLimitError(f"exceeded {self.exceeded}")
        self.operations += count
        if self.operations >= self._next_clock:
            self._next_clock = self.operations + _CLOCK_EVERY
            self._check()

    def iteration(self, constant_output: int) -> None:
        """Charge one loop iteration, which also outputs `constant_output` characters of the
        template's own text."""
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            self.fail(f"the limit of {MAX_LOOP_ITERATIONS} loop iterations per render")
        if constant_output:
            self.build(constant_output)
        self.operation()

    def build(self, units: int) -> None:
        """Charge a value of `units` characters or items that the render built."""
        if units > MAX_VALUE_LENGTH:
            self.fail(f"the limit of {MAX_VALUE_LENGTH} characters or items per value")
        self.built += units
        if self.built > MAX_BUILT_UNITS:
            self.fail(f"the limit of {MAX_BUILT_UNITS} characters or items built per render")
        if self.inline and self.built > SLICE_BUILT_UNITS:
            raise SliceSpentError
        self.operation()

    def compiling(self) -> None:
        """A template is about to be compiled: work of unknown size, never done inline."""
        if self.inline:
            raise SliceSpentError

    def room(self) -> int:
        """How many more units this render may build (a little more, to detect the excess)."""
        return MAX_BUILT_UNITS - self.built + 1

    def fail(self, limit: str) -> None:
        self.exceeded = limit
        raise TemplateLimitError(f"exceeded {limit}")

    def _check(self) -> None:
        spent = time.thread_time() - self._started
        if self.inline:
            if self.operations > SLICE_OPERATIONS or spent > self._cpu_limit:
                raise SliceSpentError
        elif spent > self._cpu_limit:
            self.fail(f"the limit of {MAX_CPU_SECONDS:g} s of CPU time per render")


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "template_budget", default=None
)


def current_budget() -> Budget:
    """The budget of the render in progress; outside one (Jinja2 folding constants while it
    compiles) a fresh full budget, so a constant that is too large is refused then too."""
    return _CURRENT.get() or Budget()


def start_budget(budget: Budget) -> contextvars.Token[Budget | None]:
    return _CURRENT.set(budget)


def end_budget(token: contextvars.Token[Budget | None]) -> None:
    _CURRENT.reset(token)
