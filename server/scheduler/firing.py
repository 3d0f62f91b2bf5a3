"""Firing one planned tick of a schedule: the event, the schedule's progress, its health.

The database work is `server.db.schedule_fires.fire_schedule` (one transaction; the tick's
idempotency key makes a replica's repeat of a tick a no-op). Trigger health counts what this
replica inserted (accepted, filtered, no_match, skipped); a tick a peer replica had already recorded is
expected with several schedulers and is not counted at all (not as `deduplicated`, which is
for senders repeating themselves). A tick that cannot be fired (database down, a failing
subscription) is logged, kept as the schedule's `last_error`, and counted as `refused` with
that error in trigger health, the outcome that means "no event exists"; it never escapes to
the loop.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

import asyncpg
import structlog
from prometheus_client import Counter, Histogram

from server.db.schedule_fires import fire_schedule, record_schedule_error
from server.db.trigger_health import IntakeOutcome, IntakeRecorder
from server.triggers.cron import CronSchedule
from server.triggers.schedule import PlannedFire

log = structlog.get_logger(__name__)

SCHEDULE_FIRES = Counter(
    "switchyard_schedule_fires_total",
    "Schedule ticks this scheduler handled: inserted, duplicate (a peer was first), stale, failed",
    ["result"],
)
SCHEDULE_MISFIRES = Counter(
    "switchyard_schedule_misfires_total",
    "Times ticks were found missed (older than the grace), by the schedule's misfire policy",
    ["policy"],
)
FIRE_DELAY = Histogram(
    "switchyard_schedule_fire_delay_seconds",
    "From a tick's time to its event being committed by this scheduler",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


class FireResult(StrEnum):
    FIRED = "fired"  # recorded now, or already recorded by a peer replica
    STALE = "stale"  # the schedule changed, was disabled or deleted since it was planned
    FAILED = "failed"


class Firing:
    """Fires ticks for one scheduler replica, named `scheduler_id` in each event's source."""

    def __init__(self, pool: asyncpg.Pool, scheduler_id: str, recorder: IntakeRecorder) -> None:
        self._pool = pool
        self._recorder = recorder
        self.scheduler_id = scheduler_id
        self.fired = 0
        self.failed = 0

    async def fire(
        self,
        schedule_id: uuid.UUID,
        trigger_key: str,
        schedule: CronSchedule,
        tick: PlannedFire,
        *,
        next_fire_at: dt.datetime | None,
        missed_since: dt.datetime | None = None,
    ) -> FireResult:
        source: dict[str, object] = {
            "via": "schedule",
            "schedule_id": str(schedule_id),
            "scheduled_for": tick.at.isoformat(),
            "catch_up": tick.catch_up,
            "scheduler": self.scheduler_id,
        }
        if missed_since is not None:
            source["missed_since"] = missed_since.isoformat()
        try:
            fired = await fire_schedule(
                schedule_id,
                cron=schedule.cron,
                timezone=schedule.timezone,
                fire_at=tick.at,
                next_fire_at=next_fire_at,
                source=source,
            )
        except Exception as error:  # noqa: BLE001 - one tick: log, record, keep the loop alive
            SCHEDULE_FIRES.labels("failed").inc()
            await self._failed(schedule_id, trigger_key, tick, error)
            return FireResult.FAILED
        if fired is None:
            SCHEDULE_FIRES.labels("stale").inc()
            log.info("schedule_fire_stale", schedule_id=str(schedule_id), at=tick.at.isoformat())
            return FireResult.STALE
        self.fired += 1
        SCHEDULE_FIRES.labels("duplicate" if fired.event.duplicate else "inserted").inc()
        if not fired.event.duplicate:
            FIRE_DELAY.observe((dt.datetime.now(dt.UTC) - tick.at).total_seconds())
            await self._count(fired.trigger_key, IntakeOutcome(fired.event.outcome))
            log.info(
                "schedule_fired",
                schedule_id=str(schedule_id),
                at=tick.at.isoformat(),
                catch_up=tick.catch_up,
                event_id=str(fired.event.event_id),
                executions=len(fired.event.execution_ids),
            )
        return FireResult.FIRED

    async def _failed(
        self, schedule_id: uuid.UUID, trigger_key: str, tick: PlannedFire, error: Exception
    ) -> None:
        self.failed += 1
        message = f"fire at {tick.at.isoformat()} failed: {error.__class__.__name__}: {error}"
        log.error(
            "schedule_fire_failed",
            schedule_id=str(schedule_id),
            at=tick.at.isoformat(),
            error=repr(error),
            exc_info=error,
        )
        try:
            await record_schedule_error(schedule_id, message)
        except Exception as failure:  # noqa: BLE001 - best effort; the fire error is logged
            log.warning(
                "schedule_error_not_recorded", schedule_id=str(schedule_id), error=repr(failure)
            )
        await self._count(trigger_key, IntakeOutcome.REFUSED, error=message)

    async def _count(
        self, trigger_key: str, outcome: IntakeOutcome, *, error: str | None = None
    ) -> None:
        try:
            self._recorder.record(trigger_key, outcome, error=error)
        except Exception as failure:  # noqa: BLE001 - health is best effort, the tick is done
            log.warning("trigger_health_not_recorded", trigger_key=trigger_key, error=repr(failure))
