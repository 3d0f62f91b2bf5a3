"""The worker's share of the process: claim fewer jobs when other work waits because of it.

The API, the scheduler and the worker share one asyncio loop and one connection pool. A
request waits for every callback queued on the loop ahead of it, and for every acquisition
queued on the pool ahead of it (asyncpg's pool is first come, first served). With hundreds of
job handlers in flight an answer (or `/health`) waits behind all of them. Two measurements
tell how long other work waits right now, as it happens:

- the loop's lag: `LoopLagMonitor` sleeps SAMPLE_SECONDS and records how late it woke up (what
  every callback on the loop waits at that moment);
- the pool's wait: each job's connection acquisitions are timed (`JobContext`); the pool
  serves in order, so a request of the API waits about as long.

`ClaimLimit` turns them into the number of jobs the worker may hold, additive increase /
multiplicative decrease (AIMD, as TCP does with its window): a delay over the target cuts the
limit to DECREASE_FACTOR of the jobs in flight (at most once per HOLD_SECONDS, so a cut shows
its effect before the next); each lag sample under the target adds one job while the limit is
what holds the worker back (jobs in flight at the limit), so an idle worker does not grow a
limit it does not use. The limit stays between 1 (a worker always makes progress) and
`WORKER_CONCURRENCY`. Running jobs are never interrupted: the worker claims nothing until its
jobs in flight fall under the limit.

Nothing needs tuning per machine: the limit follows what the machine, the database and the
other roles leave. `WORKER_TARGET_LAG_SECONDS` is the target (0 turns the adaptation off: the
worker then always fills `WORKER_CONCURRENCY`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Final

from server.worker import metrics

# How often the monitor wakes up to measure the loop's lag.
SAMPLE_SECONDS: Final = 0.01
# A cut leaves this share of the jobs in flight as the limit.
DECREASE_FACTOR: Final = 0.75
# After a cut, no other cut for this long: the jobs in flight finish, or claims stop, first.
HOLD_SECONDS: Final = 0.1
# A fresh worker starts here and grows while the process keeps up.
INITIAL_LIMIT: Final = 16


class ClaimLimit:
    """How many jobs the worker may hold at once, steered by the delays it causes (AIMD)."""

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
            self._cut(in_flight, now)
        elif in_flight >= self.value:
            self._limit = min(float(self.maximum), self._limit + 1)
            metrics.CLAIM_LIMIT.set(self.value)

    def waited(self, wait_seconds: float, *, in_flight: int, now: float) -> None:
        """A job waited `wait_seconds` for a pooled connection: cut if over the target."""
        if self.adaptive and wait_seconds > self.target_seconds:
            self._cut(in_flight, now)

    def _cut(self, in_flight: int, now: float) -> None:
        if now < self._hold_until:
            return
        self._limit = max(1.0, min(self._limit, in_flight) * DECREASE_FACTOR)
        self._hold_until = now + HOLD_SECONDS
        self.cuts += 1
        self.lowest = min(self.lowest, self.value)
        metrics.CLAIM_LIMIT_CUTS.inc()
        metrics.CLAIM_LIMIT.set(self.value)


class LoopLagMonitor:
    """Measures the event loop's lag every SAMPLE_SECONDS and reports each sample."""

    def __init__(self, on_sample: Callable[[float, float], None]) -> None:
        self._on_sample = on_sample  # (lag seconds, loop time)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + SAMPLE_SECONDS
            await asyncio.sleep(SAMPLE_SECONDS)
            now = loop.time()
            lag = max(0.0, now - asked)
            metrics.LOOP_LAG.observe(lag)
            self._on_sample(lag, now)
