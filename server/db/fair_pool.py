"""A connection pool that serves its waiters first come, first served.

asyncpg's pool hands out connections through an `asyncio.LifoQueue`. When a connection comes
back, the queue wakes its first waiter, but a caller that asks before that waiter runs takes
the connection ("barging"), and the woken waiter, finding the queue empty, goes to the back of
the line. With hundreds of job handlers acquiring and releasing in a tight loop, a webhook's
acquisition can be sent to the back again and again: in `bench.e2e` at 32 clients half the
answers took 75 ms and one in a hundred took 1.6 s or more, while `/health` (no database)
never took more than 0.2 s.

`make_fair(pool)` swaps the pool's queue for `FairHolderQueue`, which hands a returned
connection straight to the first waiter and makes every new caller queue behind the existing
waiters. Every borrower (the API, the worker's jobs, Piccolo's queries) then waits its turn,
and a wait is bounded by the waiters ahead of it. The queue is asyncpg's own holder queue
(live connections preferred, most recently used first) with only the hand-over changed;
`make_fair` checks the pool still has the queue it was written for and otherwise leaves the
pool as it is (with a warning), so an asyncpg upgrade cannot break connections, only fairness.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import asyncpg
import structlog
from asyncpg import pool as asyncpg_pool

log = structlog.get_logger(__name__)

# asyncpg's holder queue (private; asyncpg >= 0.29): live connections first, LIFO within each.
HolderQueue: Any = getattr(asyncpg_pool, "_PoolConnectionHolderQueue", None)


class FairHolderQueue(HolderQueue or asyncio.LifoQueue):  # type: ignore[misc]
    """asyncpg's holder queue, first come first served: returned holders go to the first
    waiter; a caller never takes a holder while others wait."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize=maxsize)
        self._line: collections.deque[asyncio.Future[Any]] = collections.deque()

    def put_nowait(self, item: Any) -> None:
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        super().put_nowait(item)

    async def get(self) -> Any:
        if not self._line and not self.empty():
            return self.get_nowait()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._line.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # handed over as we were cancelled: pass it on
            else:
                waiter.cancel()
                if waiter in self._line:
                    self._line.remove(waiter)
            raise

    @property
    def waiting(self) -> int:
        """Callers waiting for a connection now."""
        return sum(1 for waiter in self._line if not waiter.done())


def make_fair(pool: asyncpg.Pool) -> None:
    """Make `pool` serve its waiters in order (see the module docstring). Call it on an open
    pool before it is shared."""
    queue: Any = getattr(pool, "_queue", None)
    if HolderQueue is None or type(queue) is not HolderQueue:
        log.warning("connection_pool_not_fair", reason="asyncpg's pool queue is not the expected")
        return
    fair = FairHolderQueue(maxsize=queue.maxsize)
    while not queue.empty():
        fair.put_nowait(queue.get_nowait())
    setattr(pool, "_queue", fair)  # noqa: B010 - the one place that knows asyncpg's internals
