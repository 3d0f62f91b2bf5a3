"""Keeping leases alive (heartbeat) and taking back the leases of dead workers (rescue).

The heartbeat extends, a few times per lease period, the lease of every job this worker
holds. A job missing from the answer while its handler still runs was taken from us (our
lease expired during a pause or a partition and a rescuer re-queued it): its handler is
cancelled, since whatever it would commit is fenced out anyway. The rescuer runs in every
worker; an advisory lock lets one sweep at a time. Both loops survive database errors: they
log and try again next period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Final

import asyncpg
import structlog

from server.queue.client import extend_leases, rescue_expired_jobs
from server.queue.handlers import ACQUIRE_TIMEOUT_SECONDS, JobPhase
from server.queue.jobs import JobState, ReleasedJob
from server.queue.listener import CONNECTION_ERRORS
from server.worker import metrics
from server.worker.job_runner import HeldJob

log = structlog.get_logger(__name__)

# Three heartbeats per lease: two can fail (a database blip) before the lease runs out.
HEARTBEATS_PER_LEASE: Final = 3
# An expired lease is taken back within half a lease period after it expired.
RESCUES_PER_LEASE: Final = 2
RESCUE_BATCH_SIZE: Final = 500


class LeaseKeeper:
    """The heartbeat and rescue loops of one worker, over the jobs it holds (`held`)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        held: Mapping[int, HeldJob],
        *,
        lease_seconds: float,
        on_lost: Callable[[HeldJob], None],
    ) -> None:
        self._pool = pool
        self._held = held
        self._lease_seconds = lease_seconds
        self._on_lost = on_lost

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / HEARTBEATS_PER_LEASE)
            await self.heartbeat()

    async def rescue_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / RESCUES_PER_LEASE)
            await self.rescue()

    async def heartbeat(self) -> None:
        """Extend every held lease; report the ones lost while their handler was running."""
        snapshot = list(self._held.values())
        if not snapshot:
            return
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
                kept = await extend_leases(
                    connection,
                    [held.context.lease for held in snapshot],
                    lease_seconds=self._lease_seconds,
                )
        except CONNECTION_ERRORS as error:
            log.warning("job_heartbeat_failed", jobs=len(snapshot), error=repr(error))
            return
        for held in snapshot:
            job_id = held.context.job_id
            still_running = held.context.phase is JobPhase.RUNNING
            if job_id not in kept and still_running and self._held.get(job_id) is held:
                self._on_lost(held)

    async def rescue(self) -> list[ReleasedJob]:
        """Re-queue jobs whose lease expired (unless another worker is sweeping right now)."""
        rescued: list[ReleasedJob] = []
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
                while True:
                    batch = await rescue_expired_jobs(connection, limit=RESCUE_BATCH_SIZE)
                    rescued.extend(batch)
                    if len(batch) < RESCUE_BATCH_SIZE:
                        break
        except CONNECTION_ERRORS as error:
            log.warning("job_rescue_failed", error=repr(error))
        for job in rescued:
            metrics.JOBS_RESCUED.inc()
            if job.state is JobState.DEAD:
                metrics.for_kind(job.kind).dead.inc()
            log.warning(
                "job_rescued",
                job_id=job.id,
                kind=job.kind,
                attempt=job.attempts,
                state=job.state.value,
                detail="its worker stopped heartbeating before the lease expired",
            )
        return rescued
