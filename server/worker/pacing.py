"""The worker's share of the event loop: claim fewer jobs while the loop lags.

The API, the scheduler and the worker share one asyncio loop. A request waits for every
callback queued on the loop ahead of it, so with hundreds of runnable job handlers an answer
(or `/health`) waits for all of them. `LoopLagMonitor` measures that wait as it happens: a task
sleeps SAMPLE_SECONDS and records how late it woke up, less the time the operating system kept
the process waiting for a CPU meanwhile (Linux reports it in /proc/thread-self/schedstat):
claiming fewer jobs cannot help when other processes hold the cores, so on a shared machine
their noise does not throttle the worker.

`ClaimLimit` turns the samples into the number of jobs the worker may hold, additive increase /
multiplicative decrease (AIMD, as TCP does with its window): a sample over the target cuts the
limit to DECREASE_FACTOR of the jobs in flight (at most once per HOLD_SECONDS, so a cut shows
its effect before the next); a sample under the target adds one job while the limit is what
holds the worker back (jobs in flight at the limit), so an idle worker does not grow a limit
it does not use. The limit stays between 1 (a worker always makes progress) and
`WORKER_CONCURRENCY`. Running jobs are never interrupted: the worker claims nothing until its
jobs in flight fall under the limit.

Nothing needs tuning per machine: the limit follows what the machine and the other roles
leave. `WORKER_TARGET_LAG_SECONDS` is the target (0 turns the pacing off: the worker then always
fills `WORKER_CONCURRENCY`). The pool's side of the same problem (a webhook overtaken by job
handlers while it waits for a connection) is `server.db.fair_pool`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Final

from server.worker import metrics

# How often the monitor wakes up to measure the loop's lag.
SAMPLE_SECONDS: Final = 0.01
# A cut leaves this share of the jobs in flight as the limit.
DECREASE_FACTOR: Final = 0.75
# After a cut, no other cut for this long: the jobs in flight finish, or claims stop, first.
HOLD_SECONDS: Final = 0.1
# A fresh worker starts here and grows while the loop keeps up.
INITIAL_LIMIT: Final = 16
# Linux: "<ns on a CPU> <ns runnable but waiting for a CPU> <timeslices>" of this thread.
SCHEDSTAT: Final = Path("/proc/thread-self/schedstat")


class ClaimLimit:
    """How many jobs the worker may hold at once, steered by the loop's lag (AIMD)."""

    def __init__(self, maximum: int, *, target_seconds: float) -> None:
        self.maximum = maximum
        self.target_seconds = target_seconds
        self.adaptive = target_seconds > 0
        self._limit = float(min(maximum, INITIAL_LIMIT) if self.adaptive else maximum)
        self._hold_until = -math.inf
        self.cuts = 0
        self.lowest = self.value  # the lowest the limit has been (for tests and metrics)
        metrics.CLAIM_LIMIT.set(self.value)

    @property
    def value(self) -> int:
        """The jobs the worker may hold now."""
        return max(1, int(self._limit))

    def lag_sampled(self, lag_seconds: float, *, in_flight: int, now: float) -> None:
        """One sample of the loop's lag at `now` (loop time): cut over the target, else grow."""
        if not self.adaptive:
            return
        if lag_seconds > self.target_seconds:
            if now >= self._hold_until:
                self._limit = max(1.0, min(self._limit, in_flight) * DECREASE_FACTOR)
                self._hold_until = now + HOLD_SECONDS
                self.cuts += 1
                self.lowest = min(self.lowest, self.value)
                metrics.CLAIM_LIMIT_CUTS.inc()
        elif in_flight >= self.value:
            self._limit = min(float(self.maximum), self._limit + 1)
        metrics.CLAIM_LIMIT.set(self.value)


class LoopLagMonitor:
    """Measures the event loop's own lag every SAMPLE_SECONDS and reports each sample."""

    def __init__(self, on_sample: Callable[[float, float], None]) -> None:
        self._on_sample = on_sample  # (lag seconds, loop time)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + SAMPLE_SECONDS
            waited_before = cpu_wait_seconds()
            await asyncio.sleep(SAMPLE_SECONDS)
            now = loop.time()
            lag = max(0.0, now - asked - (cpu_wait_seconds() - waited_before))
            metrics.LOOP_LAG.observe(lag)
            self._on_sample(lag, now)


def cpu_wait_seconds() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (0 where unknown)."""
    try:
        return int(SCHEDSTAT.read_bytes().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0
