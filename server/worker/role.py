"""The worker role: claim jobs, run their handlers, complete or retry them, stop gracefully.

    async with running(pool, dsn, settings, handlers, on_crash=on_crash) as worker:
        ...  # the app serves; exiting the block is the graceful stop

One claim loop runs the worker's cycle on a pooled connection it keeps: a single statement
completes the jobs whose handlers returned since the last cycle and claims as many due jobs as
there are free slots (`worker_concurrency` handler tasks, fewer while the event loop lags: the
claim limit of `pacing.py`, so the API and /health sharing the loop keep answering). It sleeps
until a LISTEN wake-up (`server.queue.listener`), a freed slot, or the next poll, planned from
the database: the earlier of `job_poll_interval_seconds` and the next queued job's `run_at`. A
heartbeat keeps the leases of held jobs alive; a rescuer re-queues jobs whose worker died
(`leases.py`); a monitor samples the loop's lag (`pacing.py`). Each loop is supervised: a crash
is reported to `on_crash`, never silent.

Handlers are `async def handler(context: JobContext) -> None` by job kind (`handlers.py`); an
unknown kind makes the job dead with a message naming the kinds this worker has. Handlers raise
`RetryableError(delay=...)` or `PermanentError` (`server.queue.jobs`); other exceptions are
retried with the backoff of `server.engine.retry`, up to the job's `max_attempts`, then dead.

Transactional completion, for the execution engine: a handler that must commit its result and
enqueue the next steps atomically with finishing the job writes them in
`async with context.transaction() as connection:` (pass `connection` to repositories and to
`enqueue_job`/`enqueue_jobs`). The job's completion runs in that same transaction, fenced by
the lease token: the result, the successor jobs and the completion commit together, and if the
lease was lost (this worker paused past its lease and the job was rescued) `LeaseLostError`
rolls it all back. Outside a worker, `server.queue.client.complete_job(connection, lease)` is
the same fenced completion for any caller's transaction.

Stopping (leaving the block): stop claiming; let in-flight handlers finish within
`shutdown_grace_seconds`; cancel the rest (their transactions roll back) and release their jobs
to the queue with the attempt counted; complete what finished; then stop the heartbeat, the
rescuer and the listener. Size the pool for `worker_concurrency` handler transactions plus
three (claim loop, heartbeat, rescuer).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Final

import asyncpg
import structlog

from config.settings import Settings
from server import tracing
from server.db.pool import changed_session
from server.engine.retry import RetryPolicy
from server.queue.client import (
    Connection,
    complete_and_claim_jobs,
    seconds_until_next_job,
)
from server.queue.handlers import ACQUIRE_TIMEOUT_SECONDS, JobContext, JobHandler, JobPhase
from server.queue.jobs import ClaimedJob
from server.queue.listener import CONNECTION_ERRORS, JobListener
from server.queue.sql import PREPARE_CLAIM_CONNECTION
from server.supervision import CrashHandler, start_supervised
from server.worker import metrics
from server.worker.job_runner import HeldJob, JobRunner
from server.worker.leases import LeaseKeeper
from server.worker.pacing import ClaimLimit, LoopLagMonitor
from server.worker.shutdown import hand_back_jobs, settle_completions

log = structlog.get_logger(__name__)

# When the next job is due "now" but was not claimable (another worker is locking it), look
# again this soon rather than spinning.
MIN_IDLE_WAIT_SECONDS: Final = 0.005


class Worker:
    """A started worker role; `running()` yields it. Counters are for health checks and tests."""

    def __init__(
        self, pool: asyncpg.Pool, dsn: str, settings: Settings, handlers: Mapping[str, JobHandler]
    ) -> None:
        self.worker_id = f"{socket.gethostname()[:150]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._pool = pool
        self._settings = settings
        self._held: dict[int, HeldJob] = {}
        self._finished: list[HeldJob] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._work_pending = True  # claim at once on start
        self._poll_at = 0.0
        self.stopping = False
        self.listener = JobListener(
            dsn, self._on_wakeup, reconnect_delay_seconds=settings.job_listener_reconnect_seconds
        )
        policy = RetryPolicy(
            base_seconds=settings.job_retry_base_seconds,
            max_seconds=settings.job_retry_max_seconds,
        )
        self._runner = JobRunner(
            pool,
            handlers,
            timeout_seconds=settings.job_timeout_seconds,
            policy=policy,
            on_succeeded=self._on_succeeded,
            on_settled=self._settle,
        )
        self.leases = LeaseKeeper(
            pool, self._held, lease_seconds=settings.job_lease_seconds, on_lost=self._lose
        )
        self.claim_limit = ClaimLimit(
            settings.worker_concurrency, target_seconds=settings.worker_target_lag_seconds
        )
        self.lag_monitor = LoopLagMonitor(self._on_lag)
        self._claim_task: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []

    @property
    def in_flight(self) -> int:
        """Handlers running now."""
        return len(self._tasks)

    def start(self, on_crash: CrashHandler) -> None:
        def stopping() -> bool:
            return self.stopping

        self._claim_task = start_supervised(
            "worker-claim", self._claim_loop(), on_crash=on_crash, stopping=stopping
        )
        self._loops = [
            start_supervised(name, loop, on_crash=on_crash, stopping=stopping)
            for name, loop in [
                ("worker-listener", self.listener.run()),
                ("worker-heartbeat", self.leases.heartbeat_loop()),
                ("worker-rescuer", self.leases.rescue_loop()),
                ("worker-loop-lag", self.lag_monitor.run()),
            ]
        ]
        log.info("worker_started", worker_id=self.worker_id)

    async def stop(self) -> None:
        """Stop claiming, drain within the grace period, hand the rest back, stop the loops."""
        self.stopping = True
        self._changed.set()
        grace = self._settings.shutdown_grace_seconds
        if self._claim_task is not None:
            await _finish(self._claim_task, grace)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        await hand_back_jobs(
            self._pool, self._held, self._finished, self._tasks, worker_id=self.worker_id
        )
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        log.info("worker_stopped", worker_id=self.worker_id)

    async def _claim_loop(self) -> None:
        while not self.stopping:
            try:
                async with (
                    self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection,
                    changed_session(connection),
                ):
                    await connection.execute(PREPARE_CLAIM_CONNECTION)
                    while not self.stopping:
                        await self._wait_for_turn()
                        if not self.stopping:
                            await self._cycle(connection)
            except CONNECTION_ERRORS as error:
                log.warning("job_claim_failed", error=repr(error))
                await self._sleep_unless_stopping(self._settings.job_poll_interval_seconds)

    async def _wait_for_turn(self) -> None:
        """Return when a cycle has work: finished jobs to complete, or a free slot and a
        reason to look for jobs (a wake-up, or the planned poll time)."""
        loop = asyncio.get_running_loop()
        while not self.stopping and not self._finished:
            timeout: float | None = None
            if self._free_slots() > 0:
                timeout = self._poll_at - loop.time()
                if self._work_pending or timeout <= 0:
                    return
            self._changed.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()

    async def _cycle(self, connection: Connection) -> None:
        """Complete what finished, claim up to the free slots, plan the next poll if idle."""
        replan = self._work_pending or asyncio.get_running_loop().time() >= self._poll_at
        self._work_pending = False
        finished, self._finished = self._finished, []
        limit = self._free_slots()
        try:
            cycle = await complete_and_claim_jobs(
                connection,
                [held.context.lease for held in finished],
                worker_id=self.worker_id,
                limit=limit,
                lease_seconds=self._settings.job_lease_seconds,
                with_waits=tracing.ENABLED,  # step spans show each job's queue wait
            )
        except BaseException:
            self._finished[:0] = finished  # complete them in the next cycle
            self._work_pending = self._work_pending or replan
            raise
        settle_completions(self._held, finished, cycle.completed)
        for job in cycle.claimed:
            self._start(job)
        if limit > 0 and len(cycle.claimed) == limit:
            self._work_pending = True  # there may be more due jobs: claim at the next free slot
        elif limit == 0:
            self._work_pending = replan
        elif replan:
            if cycle.claimed:
                await asyncio.sleep(0)  # let the handlers just started begin first
            await self._plan_next_poll(connection)

    async def _plan_next_poll(self, connection: Connection) -> None:
        poll = self._settings.job_poll_interval_seconds
        due_in = await seconds_until_next_job(connection)
        wait = poll if due_in is None else min(max(due_in, MIN_IDLE_WAIT_SECONDS), poll)
        self._poll_at = asyncio.get_running_loop().time() + wait

    def _start(self, job: ClaimedJob) -> None:
        held = HeldJob(JobContext(job, self._pool, on_pool_wait=metrics.POOL_WAIT.observe))
        self._held[job.id] = held
        metrics.for_kind(job.kind).claimed.inc()
        task = asyncio.create_task(self._runner.run(held), name=f"job-{job.id}")
        held.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(done, held))

    def _task_done(self, task: asyncio.Task[None], held: HeldJob) -> None:
        self._tasks.discard(task)
        self._changed.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            # Whatever escaped the runner, its job is no longer worked on: stop renewing its
            # lease (a lease is renewed only while its handler is alive), so the rescuer takes
            # it back once the lease runs out and another attempt runs it.
            log.error("job_runner_crashed", task=task.get_name(), exc_info=error)
            if self._held.get(held.context.job_id) is held:
                self._settle(held)

    def _free_slots(self) -> int:
        return max(self.claim_limit.value - len(self._tasks), 0)

    def _on_lag(self, lag_seconds: float, now: float) -> None:
        before = self.claim_limit.value
        self.claim_limit.lag_sampled(lag_seconds, in_flight=len(self._tasks), now=now)
        if self.claim_limit.value > before and self._work_pending:
            self._changed.set()  # jobs were left unclaimed for want of a slot: claim them

    def _on_wakeup(self) -> None:
        self._work_pending = True
        self._changed.set()

    def _on_succeeded(self, held: HeldJob) -> None:
        self._finished.append(held)  # the list is swapped by every cycle: never bind append

    def _settle(self, held: HeldJob) -> None:
        held.context.phase = JobPhase.DONE
        self._held.pop(held.context.job_id, None)

    def _lose(self, held: HeldJob) -> None:
        held.context.lease_lost = True
        if held.task is not None and not held.task.done():
            held.task.cancel()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        self._changed.clear()
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self.stopping:
                    await self._changed.wait()
                    self._changed.clear()


async def _finish(task: asyncio.Task[None], grace_seconds: float) -> None:
    """Wait for `task` to end by itself within `grace_seconds`, else cancel it."""
    done, _ = await asyncio.wait([task], timeout=grace_seconds)
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def running(
    pool: asyncpg.Pool,
    dsn: str,
    settings: Settings,
    handlers: Mapping[str, JobHandler],
    *,
    on_crash: CrashHandler,
) -> AsyncIterator[Worker]:
    """Run a worker until the block exits, then stop it gracefully (see the module doc)."""
    worker = Worker(pool, dsn, settings, handlers)
    worker.start(on_crash)
    try:
        yield worker
    finally:
        await worker.stop()
