"""The worker's last steps with the jobs it holds: settle batched completions, and at shutdown
cancel what did not finish in the grace period and hand it back to the queue.

Handing back happens after the cancelled handlers have ended, so their transactions have rolled
back before the jobs are queued again; the attempt stays counted. If the database cannot be
reached, nothing is lost: the leases expire and a rescuer re-queues the jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, MutableMapping
from typing import Final

import asyncpg
import structlog

from server.queue.client import complete_jobs, release_jobs
from server.queue.handlers import ACQUIRE_TIMEOUT_SECONDS, JobPhase
from server.queue.listener import CONNECTION_ERRORS
from server.worker import metrics
from server.worker.job_runner import HeldJob, report_lease_lost

log = structlog.get_logger(__name__)

# How long cancelled handlers get to unwind (roll back) before their jobs are released anyway.
CANCEL_WAIT_SECONDS: Final = 5.0


def settle_completions(
    held: MutableMapping[int, HeldJob], finished: list[HeldJob], completed: Collection[int]
) -> None:
    """Forget jobs whose completion was attempted; count them, or report their lost lease."""
    for job in finished:
        job.context.phase = JobPhase.DONE
        held.pop(job.context.job_id, None)
        if job.context.job_id in completed:
            metrics.for_kind(job.context.kind).succeeded.inc()
        else:
            report_lease_lost(job)


async def hand_back_jobs(
    pool: asyncpg.Pool,
    held: MutableMapping[int, HeldJob],
    finished: list[HeldJob],
    tasks: Collection[asyncio.Task[None]],
    *,
    worker_id: str,
) -> None:
    """Cancel the handlers still running, then complete the finished jobs and release the rest."""
    for job in held.values():
        if job.context.phase is JobPhase.RUNNING and job.task is not None:
            job.task.cancel()
    if tasks:
        _, stuck = await asyncio.wait(list(tasks), timeout=CANCEL_WAIT_SECONDS)
        if stuck:
            # Their leases are released below all the same: whatever they commit is fenced out.
            log.warning("job_handlers_ignored_cancellation", count=len(stuck))
    done = list(finished)
    unfinished = [job for job in held.values() if job not in done]
    if not done and not unfinished:
        return
    reason = f"released unfinished at shutdown of worker {worker_id}; the attempt counts"
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
            completed = await complete_jobs(connection, [job.context.lease for job in done])
            released = await release_jobs(
                connection, [job.context.lease for job in unfinished], reason=reason
            )
    except CONNECTION_ERRORS as error:
        log.warning("job_hand_back_failed", jobs=len(held), error=repr(error))
        return
    settle_completions(held, done, completed)
    for back in released:
        metrics.JOBS_RELEASED.inc()
        log.info("job_released", job_id=back.id, kind=back.kind, state=back.state.value)
    held.clear()
