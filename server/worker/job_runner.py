"""Running one claimed job: call its handler under a timeout and record the outcome.

Success is not written here: the job goes back to the worker, which completes it in its next
claim cycle (one statement for many jobs), unless the handler already completed it in
`context.transaction()`. Failures are written at once, fenced by the lease: a retry after the
backoff of `server.engine.retry`, or a dead job. An unknown kind is dead at once, with a
message naming the kinds this worker handles. Cancellation means shutdown (the worker releases
the job) or a lost lease (nothing is written: the job is no longer ours).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping

import asyncpg
import structlog

from server.engine.retry import GiveUp, Retry, RetryPolicy, decide_retry
from server.queue.client import Connection, mark_job_dead, retry_job
from server.queue.handlers import ACQUIRE_TIMEOUT_SECONDS, JobContext, JobHandler, JobPhase
from server.queue.jobs import JobState, LeaseLostError, PermanentError, RetryableError
from server.queue.listener import CONNECTION_ERRORS
from server.worker import metrics

log = structlog.get_logger(__name__)


class JobTimeoutError(TimeoutError):
    """The handler ran longer than the job timeout and was cancelled."""


class HeldJob:
    """A job this worker holds the lease of, from claim until its outcome is written."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.task: asyncio.Task[None] | None = None


class JobRunner:
    """Runs held jobs with the worker's handlers, timeout and retry policy."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        handlers: Mapping[str, JobHandler],
        *,
        timeout_seconds: float,
        policy: RetryPolicy,
        on_succeeded: Callable[[HeldJob], None],
        on_settled: Callable[[HeldJob], None],
    ) -> None:
        self._pool = pool
        self._handlers = handlers
        self._timeout_seconds = timeout_seconds
        self._policy = policy
        self._on_succeeded = on_succeeded
        self._on_settled = on_settled

    async def run(self, held: HeldJob) -> None:
        """Run `held`; on return its outcome is written or handed to `on_succeeded`."""
        context = held.context
        kind_metrics = metrics.for_kind(context.kind)
        metrics.JOBS_IN_FLIGHT.inc()
        started = time.perf_counter()
        try:
            error = await self._call(context)
            kind_metrics.duration.observe(time.perf_counter() - started)
            if context.lease_lost:  # the handler swallowed LeaseLostError
                raise LeaseLostError(context.job_id)
            if error is None and not context.completed:
                context.phase = JobPhase.SETTLING  # completed by the worker, fenced
                self._on_succeeded(held)  # completed in the worker's next claim cycle
                return
            if error is None:
                kind_metrics.succeeded.inc()
            else:
                await self._record_failure(held, error)
            self._on_settled(held)
        except LeaseLostError:
            self._lease_lost(held)
        except asyncio.CancelledError:
            if not context.lease_lost:
                raise  # shutdown: the worker releases the job
            self._lease_lost(held)
        finally:
            metrics.JOBS_IN_FLIGHT.dec()

    async def _call(self, context: JobContext) -> BaseException | None:
        """The handler's exception, or None when it returned; LeaseLostError propagates."""
        handler = self._handlers.get(context.kind)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            return PermanentError(
                f"no handler for job kind {context.kind!r} (this worker handles: {known}); "
                "deploy a worker that knows it, then re-queue the job"
            )
        scope = asyncio.timeout(self._timeout_seconds)
        try:
            async with scope:
                await handler(context)
        except LeaseLostError:
            raise
        except TimeoutError as error:
            if scope.expired():
                return JobTimeoutError(f"timed out after {self._timeout_seconds:g} s")
            return error
        except Exception as error:  # noqa: BLE001 - one job's boundary: record it, go on
            return error
        return None

    async def _record_failure(self, held: HeldJob, error: BaseException) -> None:
        context = held.context
        context.phase = JobPhase.SETTLING
        job = context.job
        decision = decide_retry(
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            requested_delay=error.delay if isinstance(error, RetryableError) else None,
            permanent=isinstance(error, PermanentError),
            policy=self._policy,
            draw=random.random(),  # noqa: S311 - jitter, not cryptography
        )
        message = f"{type(error).__name__}: {error}"
        kind_metrics = metrics.for_kind(job.kind)
        kind_metrics.failed.inc()
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
                state = await self._write_decision(connection, held, decision, message)
        except CONNECTION_ERRORS as db_error:
            # The job stays running until its lease expires; the rescuer re-queues it then.
            log.warning("job_outcome_not_recorded", job_id=job.id, error=repr(db_error))
            return
        if state is JobState.DEAD:
            kind_metrics.dead.inc()
            log.warning(
                "job_dead", job_id=job.id, kind=job.kind, attempt=job.attempts, error=message
            )

    async def _write_decision(
        self,
        connection: Connection,
        held: HeldJob,
        decision: Retry | GiveUp,
        message: str,
    ) -> JobState:
        """Write the retry or the dead job (fenced); returns the job's new state."""
        job = held.context.job
        if isinstance(decision, GiveUp):
            await mark_job_dead(connection, job.lease, error=f"{decision.reason}: {message}")
            return JobState.DEAD
        state = await retry_job(
            connection, job.lease, delay_seconds=decision.delay_seconds, error=message
        )
        if state is JobState.QUEUED:
            log.info(
                "job_retry_scheduled",
                job_id=job.id,
                kind=job.kind,
                attempt=job.attempts,
                delay_seconds=round(decision.delay_seconds, 3),
                error=message,
            )
        return state

    def _lease_lost(self, held: HeldJob) -> None:
        report_lease_lost(held)
        self._on_settled(held)


def report_lease_lost(held: HeldJob) -> None:
    """Log and count a job whose lease this worker lost: its outcome was not written."""
    job = held.context.job
    metrics.JOBS_LEASE_LOST.inc()
    log.warning(
        "job_lease_lost",
        job_id=job.id,
        kind=job.kind,
        attempt=job.attempts,
        detail="lease expired or taken over; this run's outcome was discarded",
    )
