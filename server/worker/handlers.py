"""What a job handler is and what it receives: `JobHandler` and `JobContext`.

A handler is `async def handle(context: JobContext) -> None`, registered by job kind. Returning
means success; the worker then completes the job (batched with its next claim). Raising
`RetryableError(delay=...)` or `PermanentError` (from `server.queue.jobs`) chooses a retry or a
dead job; any other exception counts as retryable. A handler that writes results and enqueues
successors does it in `context.transaction()`: those writes, the successors and the job's
completion commit together, fenced by the lease, or not at all. A handler that goes on with
more work of the same kind (the engine's next step) calls `context.continue_with(job)` inside
that transaction: the job is handed on instead of completed, and after the commit the context
describes the new work (its payload, attempt 1) while the handler keeps running it.
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
from server.worker import metrics

ACQUIRE_TIMEOUT_SECONDS: Final = 10.0


class JobPhase(StrEnum):
    """Where a held job is: its handler runs, or its outcome is being written (settling).

    The heartbeat takes a missing lease for a lost one only while the job is `running`: once
    settling, the row legitimately changes or disappears.
    """

    RUNNING = "running"
    SETTLING = "settling"
    DONE = "done"


class JobContext:
    """One attempt of one job, as its handler sees it."""

    def __init__(self, job: ClaimedJob, pool: asyncpg.Pool) -> None:
        self.job = job
        self._pool = pool
        self.phase = JobPhase.RUNNING
        self.completed = False
        self.lease_lost = False
        self.started_at = time.monotonic()  # when the worker started running this claim
        self._continuation: NewJob | None = None
        self._settled_here = False  # the handler's own statement settled it (see `settled`)
        self._in_transaction = False

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

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection for reads and writes that need not commit with the job. The
        wait for it is a metric (the API's requests wait in the same line: `server.db.fair_pool`)."""
        asked = time.perf_counter()
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
            metrics.POOL_WAIT.observe(time.perf_counter() - asked)
            yield connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A transaction that also completes this job, atomically, when the block succeeds.

        Write the step's result and `enqueue_job(connection, ...)` its successors inside it.
        If the block raises, everything rolls back and the job stays ours to retry; if the
        lease was lost meanwhile, `LeaseLostError` is raised and everything rolls back too, so
        a worker that lost its job never commits a result for it. Use it once per attempt
        (once per piece of work, when the block calls `continue_with`).
        """
        if self.completed:
            raise RuntimeError(f"job {self.job.id} is already completed; use one transaction")
        self._continuation, self._settled_here = None, False
        async with self.connection() as connection:
            self._in_transaction = True
            try:
                async with connection.transaction():
                    yield connection
                    # From here until the commit the heartbeat must not take the row's
                    # disappearance for a lost lease.
                    self.phase = JobPhase.SETTLING
                    if self._settled_here:
                        pass  # the block's own statement settled the job
                    elif self._continuation is None:
                        await complete_job(connection, self.job.lease)
                    else:
                        await continue_job(connection, self.job.lease, self._continuation)
            except LeaseLostError:
                self.lease_lost = True
                raise
            except BaseException:
                self.phase = JobPhase.RUNNING
                self._continuation, self._settled_here = None, False
                raise
            finally:
                self._in_transaction = False
        # Only here has the transaction committed.
        continuation, self._continuation, self._settled_here = self._continuation, None, False
        self._apply(continuation)

    def continue_with(self, job: NewJob) -> None:
        """Inside `transaction()`: hand this job on to `job`'s work (same kind, same lease)
        instead of completing it, when the transaction commits."""
        self._check_kind(job)
        self._continuation = job

    @asynccontextmanager
    async def settling(self) -> AsyncIterator[None]:
        """Around a handler's own statement that completes this job or hands it on (fenced
        by the lease; `server.queue.sql.settle_job_ctes`), which calls `settled` if it did:
        meanwhile the heartbeat must not take the row's disappearance for a lost lease."""
        self.phase = JobPhase.SETTLING
        settled = False
        try:
            yield
            settled = self.completed or self._settled_here or self.phase is not JobPhase.SETTLING
        finally:
            if not settled and self.phase is JobPhase.SETTLING:
                self.phase = JobPhase.RUNNING

    def settled(self, continuation: NewJob | None) -> None:
        """The handler's own statement completed this job (None) or handed it on to
        `continuation`: inside `transaction()` that takes effect at the commit (and the
        transaction does not complete the job again); outside one, at once."""
        if continuation is not None:
            self._check_kind(continuation)
        if self._in_transaction:
            self._continuation, self._settled_here = continuation, True
        else:
            self._apply(continuation)

    def _apply(self, continuation: NewJob | None) -> None:
        if continuation is None:
            self.completed = True
            self.phase = JobPhase.DONE
        else:
            self.job = msgspec.structs.replace(
                self.job,
                payload=continuation.payload,
                attempts=1,
                max_attempts=continuation.max_attempts,
            )
            self.phase = JobPhase.RUNNING

    def _check_kind(self, job: NewJob) -> None:
        if job.kind != self.job.kind:
            raise ValueError(f"a {self.job.kind!r} job cannot continue as a {job.kind!r} job")


JobHandler = Callable[[JobContext], Awaitable[None]]
