"""What a job handler is and what it receives: `JobHandler` and `JobContext`.

A handler is `async def handle(context: JobContext) -> None`, registered by job kind with a
worker (`server.worker`). Raising `RetryableError(delay=...)` or `PermanentError` (from
`server.queue.jobs`) chooses a retry or a dead job; any other exception counts as retryable.

A job ends in one of these ways, and the context always knows which (`phase`):
- The handler returns: the worker completes the job, batched with its next claim.
- The handler writes its results in `context.transaction()`: they, its successor jobs and the
  job's completion commit together, fenced by the lease, or not at all. Inside it,
  `continue_with(job)` hands the job on to more work of its kind instead of completing it (the
  runtime's next step; or of another kind, whose handler the handler then runs itself): after
  the commit the context describes the new work (its kind, payload, attempt 1) while the
  handler keeps running it.
- The handler's own statement settles the job (`server.queue.sql.settle_job_ctes`), inside
  `settling()`, which it tells whether the statement did. In a transaction that takes effect at
  the commit (and the transaction does not complete the job again); outside one, at once.
- The handler raises: the worker writes the retry or the dead job.
While the outcome is being written the phase is `settling`: the heartbeat must not take the
row's change or disappearance for a lost lease. A lost lease (`LeaseLostError` from a fenced
write, or the heartbeat finding the row gone while the handler runs) sets `lease_lost`: that
run's outcome is discarded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Final

import asyncpg
import msgspec

from server.queue.client import Connection, complete_job, continue_job
from server.queue.jobs import ClaimedJob, Lease, LeaseLostError, NewJob, Payload

ACQUIRE_TIMEOUT_SECONDS: Final = 10.0


class JobPhase(StrEnum):
    """Where a held job is: its handler runs, its outcome is being written, or it is over."""

    RUNNING = "running"
    SETTLING = "settling"
    DONE = "done"


class _Ending(msgspec.Struct, kw_only=True):
    """How the job ends when the handler's transaction commits."""

    continuation: NewJob | None = None  # None: completed; else handed on to this work
    written: bool = False  # the handler's own statement already wrote it


def _ignore_wait(_: float) -> None:
    pass


class JobContext:
    """One attempt of one job, as its handler sees it."""

    def __init__(
        self,
        job: ClaimedJob,
        pool: asyncpg.Pool,
        *,
        on_pool_wait: Callable[[float], None] = _ignore_wait,
    ) -> None:
        self.job = job
        self.phase = JobPhase.RUNNING
        self.lease_lost = False
        self.started_at = time.monotonic()  # when the worker started running this claim
        self._pool = pool
        self._on_pool_wait = on_pool_wait
        self._ending: _Ending | None = None  # set inside `transaction()`

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def payload(self) -> Payload:
        return self.job.payload

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.job.attempts

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now makes the job dead (to take a workflow's error edge)."""
        return self.job.attempts >= self.job.max_attempts

    @property
    def lease(self) -> Lease:
        return self.job.lease

    @property
    def completed(self) -> bool:
        """The job's outcome is written: nothing more may be written for it."""
        return self.phase is JobPhase.DONE

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection for reads and writes that need not commit with the job. The
        wait for it is reported (the API's requests wait in the same line:
        `server.db.fair_pool`)."""
        asked = time.perf_counter()
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
            self._on_pool_wait(time.perf_counter() - asked)
            yield connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A transaction that also completes this job, atomically, when the block succeeds.

        Write the results and `enqueue_job(connection, ...)` the successors inside it. If the
        block raises, everything rolls back and the job stays ours to retry; if the lease was
        lost meanwhile, `LeaseLostError` is raised and everything rolls back too, so a worker
        that lost its job never commits a result for it. Use it once per attempt (once per
        piece of work, when the block calls `continue_with`).
        """
        if self.completed:
            raise RuntimeError(f"job {self.job.id} is already completed; use one transaction")
        ending = self._ending = _Ending()
        try:
            async with self.connection() as connection, connection.transaction():
                yield connection
                self.phase = JobPhase.SETTLING
                if ending.written:
                    pass  # the block's own statement settled the job
                elif ending.continuation is None:
                    await complete_job(connection, self.job.lease)
                else:
                    await continue_job(connection, self.job.lease, ending.continuation)
        except LeaseLostError:
            self.lease_lost = True
            raise
        except BaseException:
            self.phase = JobPhase.RUNNING
            raise
        finally:
            self._ending = None
        self._end(ending.continuation)  # only here has the transaction committed

    def continue_with(self, job: NewJob, *, change_kind: bool = False) -> None:
        """Inside `transaction()`: hand this job on to `job`'s work (same lease; same kind
        unless `change_kind`: then the handler runs that kind's handler itself, and a worker
        that dies meanwhile leaves a job of the new kind to retry) instead of completing it,
        when the transaction commits."""
        if self._ending is None:
            raise RuntimeError("continue_with is only possible inside transaction()")
        if not change_kind:
            self._check_kind(job)
        self._ending.continuation = job

    @asynccontextmanager
    async def settling(self) -> AsyncIterator[Callable[[NewJob | None], None]]:
        """Around the handler's own statement that completes this job or hands it on (fenced
        by the lease); call the yielded function with the continuation (None: completed) if the
        statement did. Meanwhile the heartbeat must not take the row's disappearance for a
        lost lease."""
        self.phase = JobPhase.SETTLING
        settled: list[NewJob | None] = []

        def did_settle(continuation: NewJob | None) -> None:
            if continuation is not None:
                self._check_kind(continuation)
            settled.append(continuation)

        try:
            yield did_settle
        finally:
            if not settled:
                self.phase = JobPhase.RUNNING
        if not settled:
            return
        if self._ending is not None:  # in a transaction: takes effect at its commit
            self._ending.written, self._ending.continuation = True, settled[0]
        else:
            self._end(settled[0])

    def _end(self, continuation: NewJob | None) -> None:
        """The outcome is written: done, or running the work it was handed on to."""
        if continuation is None:
            self.phase = JobPhase.DONE
        else:
            self.job = msgspec.structs.replace(
                self.job,
                kind=continuation.kind,
                payload=continuation.payload,
                attempts=1,
                max_attempts=continuation.max_attempts,
            )
            self.phase = JobPhase.RUNNING

    def _check_kind(self, job: NewJob) -> None:
        if job.kind != self.job.kind:
            raise ValueError(f"a {self.job.kind!r} job cannot continue as a {job.kind!r} job")


JobHandler = Callable[[JobContext], Awaitable[None]]
