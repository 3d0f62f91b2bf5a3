"""The in-memory set of enabled schedules, one APScheduler job each, fed from the table.

APScheduler is the alarm clock: each schedule's job wakes at the schedule's next fire time
(computed by `server.triggers.schedule`, so DST rules are ours and the same on every
replica). What to fire on a wake-up is decided from the entry's `pending` tick, the first one
this replica has not handled: every due tick within the misfire grace fires, older ones are
missed and handled by the schedule's policy (`plan_fires`). So a wake-up APScheduler drops (the
previous fire of the same schedule still running) loses nothing: the next one fires the late
tick. A tick that fails stays pending and is retried a moment later.

`resync()` loads every enabled schedule from the table (start-up, periodic, after the change
listener reconnects); `reload(id)` one of them (a change notification). A new or redefined
schedule (cron, time zone or misfire policy changed) starts from the table's plan: the first
tick after `last_fire_at`, not before `next_fire_at`; a missed tick is thus noticed on start and
on every resync. For a known schedule, the table can only move `pending` forward (a peer fired
it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Final

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from server.db.schedule_fires import advance_next_fire
from server.db.schedules import ScheduleView, enabled_schedules, find_schedule
from server.errors import ValidationError
from server.scheduler.firing import SCHEDULE_MISFIRES, FireResult, Firing
from server.triggers.cron import CronSchedule, parse_schedule
from server.triggers.schedule import (
    FirePlan,
    MisfirePolicy,
    first_unfired_tick,
    next_fire_time,
    plan_fires,
)

log = structlog.get_logger(__name__)

FIRE_RETRY_DELAY: Final = dt.timedelta(seconds=2)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Wakeups(BaseTrigger):  # type: ignore[misc]  # APScheduler ships no type information
    """An APScheduler trigger that wakes at a schedule's fire times, as the pure module says."""

    __slots__ = ("schedule",)

    def __init__(self, schedule: CronSchedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        return next_fire_time(self.schedule, previous_fire_time or now)


@dataclass(eq=False)
class Entry:
    view: ScheduleView
    schedule: CronSchedule
    pending: dt.datetime | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _definition(view: ScheduleView) -> tuple[str, str, MisfirePolicy]:
    """What a loaded entry is planned from; other fields are read from the row at fire time."""
    return (view.cron, view.timezone, view.misfire_policy)


class ScheduleSet:
    """Enabled schedules by id; `request_reload(id)` asks the role's sync loop to reload one
    whose committed definition no longer matches the copy here."""

    def __init__(
        self,
        scheduler: AsyncIOScheduler,
        firing: Firing,
        request_reload: Callable[[uuid.UUID], None],
    ) -> None:
        self._scheduler = scheduler
        self._firing = firing
        self._request_reload = request_reload
        self.entries: dict[uuid.UUID, Entry] = {}
        self.wakes: set[asyncio.Task[None]] = set()

    async def resync(self) -> None:
        views = await enabled_schedules()
        seen = {view.id for view in views}
        for view in views:
            self._apply(view)
        for schedule_id in set(self.entries) - seen:
            self._remove(schedule_id)
        log.debug("schedules_synced", schedules=len(self.entries))

    async def reload(self, schedule_id: uuid.UUID) -> None:
        view = await find_schedule(schedule_id)
        if view is None or not view.enabled:
            self._remove(schedule_id)
        else:
            self._apply(view)

    def _apply(self, view: ScheduleView) -> None:
        now = utc_now()
        entry = self.entries.get(view.id)
        if entry is not None and _definition(entry.view) == _definition(view):
            entry.view = view  # payload or trigger key may have changed; fires read the row
            if not entry.lock.locked():  # a running wake-up is settling `pending` itself
                stored = self._stored_pending(entry.schedule, view, now)
                if stored is not None and (entry.pending is None or stored > entry.pending):
                    entry.pending = stored
                if entry.pending is not None and entry.pending <= now:
                    self._wake_at(view.id, now)  # a failed or missed tick: handle it now
            return
        try:
            schedule = parse_schedule(view.cron, view.timezone)
        except ValidationError as error:
            self._remove(view.id)
            log.error("schedule_invalid", schedule_id=str(view.id), error=str(error))
            return
        pending = self._stored_pending(schedule, view, now)
        self.entries[view.id] = Entry(view=view, schedule=schedule, pending=pending)
        if pending is None:
            self._remove_job(view.id)
            return
        self._scheduler.add_job(
            self._wake,
            trigger=Wakeups(schedule),
            args=[view.id],
            id=str(view.id),
            name=f"schedule {view.id}",
            replace_existing=True,
            # A past time would make APScheduler walk every tick since; wake now instead.
            next_run_time=max(pending, now),
        )
        log.info("schedule_loaded", schedule_id=str(view.id), pending=pending.isoformat())

    @staticmethod
    def _stored_pending(
        schedule: CronSchedule, view: ScheduleView, now: dt.datetime
    ) -> dt.datetime | None:
        return first_unfired_tick(
            schedule, last_fire_at=view.last_fire_at, next_fire_at=view.next_fire_at, now=now
        )

    def _remove(self, schedule_id: uuid.UUID) -> None:
        if self.entries.pop(schedule_id, None) is not None:
            log.info("schedule_unloaded", schedule_id=str(schedule_id))
        self._remove_job(schedule_id)

    def _remove_job(self, schedule_id: uuid.UUID) -> None:
        with suppress(JobLookupError):
            self._scheduler.remove_job(str(schedule_id))

    def _wake_at(self, schedule_id: uuid.UUID, when: dt.datetime) -> None:
        job = self._scheduler.get_job(str(schedule_id))
        if job is not None and (job.next_run_time is None or job.next_run_time > when):
            job.modify(next_run_time=when)

    async def _wake(self, schedule_id: uuid.UUID) -> None:
        """The APScheduler job of a schedule: fire whatever is due, in order."""
        entry = self.entries.get(schedule_id)
        task = asyncio.current_task()
        if entry is None or task is None:
            return
        self.wakes.add(task)
        try:
            async with entry.lock:
                await self._fire_due(schedule_id, entry)
        finally:
            self.wakes.discard(task)

    async def _fire_due(self, schedule_id: uuid.UUID, entry: Entry) -> None:
        while self.entries.get(schedule_id) is entry and entry.pending is not None:
            now = utc_now()
            if entry.pending > now:
                return
            plan = plan_fires(
                entry.schedule,
                first_unfired=entry.pending,
                now=now,
                policy=entry.view.misfire_policy,
            )
            if plan.missed is not None:
                SCHEDULE_MISFIRES.labels(entry.view.misfire_policy.value).inc()
                log.warning(
                    "schedule_misfired",
                    schedule_id=str(schedule_id),
                    policy=entry.view.misfire_policy.value,
                    first_missed=plan.missed.first.isoformat(),
                    last_missed=plan.missed.last.isoformat(),
                )
            if not await self._fire_plan(schedule_id, entry, plan):
                return
            entry.pending = plan.next_fire_at
            if not plan.fires and plan.missed is not None and plan.next_fire_at is not None:
                await self._advance(entry, plan.next_fire_at)

    async def _fire_plan(self, schedule_id: uuid.UUID, entry: Entry, plan: FirePlan) -> bool:
        """Fire the plan's ticks in order; False (and `pending` at the failed tick) on failure."""
        for tick in plan.fires:
            result = await self._firing.fire(
                schedule_id,
                entry.view.trigger_key,
                entry.schedule,
                tick,
                next_fire_at=next_fire_time(entry.schedule, tick.at),
                missed_since=plan.missed.first if tick.catch_up and plan.missed else None,
            )
            if result is FireResult.STALE:
                self._request_reload(schedule_id)
                return False
            if result is FireResult.FAILED:
                entry.pending = tick.at
                self._wake_at(schedule_id, utc_now() + FIRE_RETRY_DELAY)
                return False
        return True

    async def _advance(self, entry: Entry, next_fire_at: dt.datetime) -> None:
        """Record that skipped ticks moved the plan (best effort: the next fire records it)."""
        try:
            await advance_next_fire(
                entry.view.id,
                cron=entry.view.cron,
                timezone=entry.view.timezone,
                next_fire_at=next_fire_at,
            )
        except Exception as error:  # noqa: BLE001 - one schedule's bookkeeping, never the loop
            log.warning(
                "schedule_plan_not_recorded", schedule_id=str(entry.view.id), error=repr(error)
            )
