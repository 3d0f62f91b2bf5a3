"""The worker's share of the event loop: claim less when the loop lags.

The API, the scheduler and the worker share one asyncio loop. A request waits for every
callback queued ahead of it, so when hundreds of job handlers are runnable at once an answer
(or `/health`) waits for all of them. `LoopLagMonitor` measures that wait as it happens: a task
sleeps SAMPLE_SECONDS and records how late it woke up (the lag every other callback on the
loop sees at that moment). `ClaimLimit` turns the samples into the number of jobs the worker
may hold, additive increase / multiplicative decrease (AIMD, as TCP does with its window):

- a sample above the target lag cuts the limit to DECREASE_FACTOR of the jobs in flight (at
  most once per HOLD_SECONDS, so the cut's effect is seen before the next one);
- a sample at or under the target adds one job while the limit is what holds the worker back
  (jobs in flight near the limit); an idle worker does not grow a limit it does not use.

The limit stays between 1 (a worker always makes progress) and `WORKER_CONCURRENCY`. Jobs
already running are never interrupted: the worker claims nothing until its jobs in flight fall
under the limit. Nothing needs tuning per machine; `WORKER_LOOP_LAG_TARGET_SECONDS` sets the
target (0 turns the adaptation off: the worker then always fills `WORKER_CONCURRENCY`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Final

from server.worker import metrics

# How often the monitor wakes up to measure the lag.
SAMPLE_SECONDS: Final = 0.01
# A cut leaves this share of the jobs in flight as the limit.
DECREASE_FACTOR: Final = 0.75
# After a cut, no other cut for this long: the jobs in flight finish, or claims stop, first.
HOLD_SECONDS: Final = 0.1
# A fresh worker starts here and grows while the loop keeps up.
INITIAL_LIMIT: Final = 16


class ClaimLimit:
    """How many jobs the worker may hold at once, steered by the loop's lag (AIMD)."""

    def __init__(self, maximum: int, *, target_seconds: float) -> None:
        self.maximum = maximum
        self.target_seconds = target_seconds
        self.adaptive = target_seconds > 0
        self._limit = float(min(maximum, INITIAL_LIMIT) if self.adaptive else maximum)
        self._hold_until = -math.inf
        self.cuts = 0
        self.lowest = self.value  # the lowest the limit has been (health checks and tests)
        metrics.CLAIM_LIMIT.set(self.value)

    @property
    def value(self) -> int:
        """The jobs the worker may hold now."""
        return max(1, int(self._limit))

    def observe(self, lag_seconds: float, *, in_flight: int, now: float) -> None:
        """Adjust the limit to one lag sample taken at `now` (loop time)."""
        if not self.adaptive:
            return
        if lag_seconds > self.target_seconds:
            if now >= self._hold_until:
                self._limit = max(1.0, min(self._limit, in_flight) * DECREASE_FACTOR)
                self._hold_until = now + HOLD_SECONDS
                self.cuts += 1
                self.lowest = min(self.lowest, self.value)
                metrics.CLAIM_LIMIT_CUTS.inc()
        elif in_flight >= self.value - 1:
            self._limit = min(float(self.maximum), self._limit + 1)
        metrics.CLAIM_LIMIT.set(self.value)


class LoopLagMonitor:
    """Measures the event loop's lag every SAMPLE_SECONDS and reports each sample."""

    def __init__(self, on_sample: Callable[[float, float], None]) -> None:
        self._on_sample = on_sample  # (lag seconds, loop time)
        self.last_lag_seconds = 0.0
        self.max_lag_seconds = 0.0  # since start: for tests and health checks

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + SAMPLE_SECONDS
            await asyncio.sleep(SAMPLE_SECONDS)
            now = loop.time()
            lag = max(0.0, now - asked)
            self.last_lag_seconds = lag
            self.max_lag_seconds = max(self.max_lag_seconds, lag)
            metrics.LOOP_LAG.observe(lag)
            self._on_sample(lag, now)
