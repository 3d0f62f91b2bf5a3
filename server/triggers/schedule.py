"""Fire times of cron schedules and misfire decisions, as pure functions of `now`.

Every function takes the instants it reasons about as arguments and returns UTC datetimes;
nothing here reads a clock, so replicas given the same values agree, and tests use plain
values. Next fire times come from APScheduler 3's `CronTrigger` alone, evaluated on the
schedule's time zone, with two daylight-saving rules made explicit and consistent (however the
question is asked: from a previous fire, or from any instant in between):

- Skipped hour (spring forward). A wall-clock time that does not exist that day is read with
  the offset in force before the change, so it fires once, later by the shift (one hour in
  most zones) on the new clock: in America/New_York on 2024-03-10 a daily `30 2 * * *` fires
  at 03:30 EDT (07:30 UTC). An interval-like schedule loses nothing real: `0 * * * *` fires
  at 01:00 EST and then 03:00 EDT, one hour apart, because 02:00 EST would be the same
  instant as 03:00 EDT.
- Repeated hour (fall back). A wall-clock time that happens twice fires once, on its first
  pass (the daylight-time offset): on 2024-11-03 a daily `30 1 * * *` fires at 01:30 EDT
  (05:30 UTC) and not again at 01:30 EST. Schedules whose hour field is `*` are wall-clock
  intervals and keep firing through both passes (`*/15 * * * *` fires every 15 minutes of real
  time), like classic cron's treatment of wildcard jobs.

Misfires: a tick is *late* when it is handled at most `MISFIRE_GRACE` (30 s) after its time
(a busy loop, a rolling restart) and then fires normally; older unfired ticks are *missed*.
With `run_once` (the default) the most recent missed tick fires once as a catch-up, never one
fire per missed tick; with `skip` none does. The first unfired tick is read from the
schedule's row: the one after `last_fire_at`, but never before `next_fire_at`, which is reset
whenever the schedule is created, re-enabled or given another cron or time zone, so paused
time and ticks of a replaced cron are never caught up.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Final

import msgspec

from server.errors import ValidationError
from server.triggers.cron import CRON_EXAMPLE, CronSchedule, parse_schedule

MISFIRE_GRACE: Final = dt.timedelta(seconds=30)
# Longer than any daylight-saving shift (Antarctica/Troll moves 2 h): the window after a clock
# change in which wall times of the skipped hour still lie in the future.
MAX_CLOCK_SHIFT: Final = dt.timedelta(hours=3)
_TICK: Final = dt.timedelta(microseconds=1)


class MisfirePolicy(StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"


class OverlapPolicy(StrEnum):
    """What a fire does while an execution the schedule started for a workflow is unfinished:
    start another (`allow`), start none (`skip`), or let at most one wait for it (`buffer_one`)."""

    ALLOW = "allow"
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"


class PlannedFire(msgspec.Struct, frozen=True, kw_only=True):
    at: dt.datetime
    catch_up: bool = False


class MissedTicks(msgspec.Struct, frozen=True, kw_only=True):
    """Ticks older than the grace that never fired: `first` to `last`, both included."""

    first: dt.datetime
    last: dt.datetime


class FirePlan(msgspec.Struct, frozen=True, kw_only=True):
    """What to fire now, in order; what was missed; and the first tick after all of it."""

    fires: tuple[PlannedFire, ...]
    missed: MissedTicks | None
    next_fire_at: dt.datetime | None


def validate_schedule(cron: str, timezone: str, *, now: dt.datetime) -> CronSchedule:
    """Parse `cron` in `timezone` and require a fire time after `now`.

    Raises:
        ValidationError: naming the field (`cron`, `timezone`) with an example.
    """
    schedule = parse_schedule(cron, timezone)
    if next_fire_time(schedule, now) is None:
        message = f"{cron!r} never fires after {now:%Y-%m-%d}; for example {CRON_EXAMPLE}"
        raise ValidationError(f"cron: {message}", [{"field": "cron", "message": message}])
    return schedule


def fire_idempotency_key(schedule_id: uuid.UUID, fire_at: dt.datetime) -> str:
    """The event key of one tick, the same on every replica: the schedule and its UTC time."""
    return f"schedule:{schedule_id}:{fire_at.astimezone(dt.UTC).isoformat()}"


def next_fire_time(schedule: CronSchedule, after: dt.datetime) -> dt.datetime | None:
    """The first fire time strictly after `after` (aware), in UTC; None if it never fires."""
    cursor = after
    while True:
        candidate = _next_candidate(schedule, cursor)
        if candidate is None or schedule.fires_every_hour:
            return candidate
        if not _is_second_pass(schedule, candidate):
            return candidate
        cursor = candidate  # the repeated wall time already fired on its first pass


def fire_times_between(
    schedule: CronSchedule, after: dt.datetime, until: dt.datetime, *, limit: int = 1000
) -> list[dt.datetime]:
    """Fire times in `(after, until]`, oldest first, at most `limit` of them."""
    times: list[dt.datetime] = []
    tick = next_fire_time(schedule, after)
    while tick is not None and tick <= until and len(times) < limit:
        times.append(tick)
        tick = next_fire_time(schedule, tick)
    return times


def last_fire_time_between(
    schedule: CronSchedule, after: dt.datetime, until: dt.datetime
) -> dt.datetime | None:
    """The latest fire time in `(after, until]`, or None; logarithmic in the span, so a week
    of an every-second schedule costs about fifty steps, not 600,000."""
    low = next_fire_time(schedule, after)
    if low is None or low > until:
        return None
    high = until  # invariant: `low` is a fire time, and none lies in (high, until]
    while True:
        following = next_fire_time(schedule, low)
        if following is None or following > until:
            return low
        low = following
        middle = low + (high - low) / 2
        jumped = next_fire_time(schedule, middle)
        if jumped is not None and jumped <= until:
            low = jumped
        else:
            high = middle


def first_unfired_tick(
    schedule: CronSchedule,
    *,
    last_fire_at: dt.datetime | None,
    next_fire_at: dt.datetime | None,
    now: dt.datetime,
) -> dt.datetime | None:
    """The first tick not fired yet, from a schedule row (see the module docstring).

    With neither value recorded nothing can have been missed: the first tick after `now`.
    """
    after_last = None if last_fire_at is None else next_fire_time(schedule, last_fire_at)
    if after_last is None and next_fire_at is None:
        return None if last_fire_at is not None else next_fire_time(schedule, now)
    if after_last is None or next_fire_at is None:
        return after_last or next_fire_at
    return max(after_last, next_fire_at)


def plan_fires(
    schedule: CronSchedule,
    *,
    first_unfired: dt.datetime | None,
    now: dt.datetime,
    policy: MisfirePolicy,
    grace: dt.timedelta = MISFIRE_GRACE,
) -> FirePlan:
    """The fires due at `now` when every tick before `first_unfired` has been handled.

    Late ticks (within `grace`) fire each; missed ones (older) fire once, as one catch-up of
    the most recent, under `run_once`, and not at all under `skip`.
    """
    if first_unfired is None or first_unfired > now:
        return FirePlan(fires=(), missed=None, next_fire_at=first_unfired)
    fires: list[PlannedFire] = []
    missed = None
    cursor = first_unfired - _TICK
    oldest_late = now - grace
    if first_unfired < oldest_late:
        last_missed = last_fire_time_between(schedule, cursor, oldest_late - _TICK)
        if last_missed is not None:
            first_missed = next_fire_time(schedule, cursor) or last_missed
            missed = MissedTicks(first=first_missed, last=last_missed)
            if policy is MisfirePolicy.RUN_ONCE:
                fires.append(PlannedFire(at=last_missed, catch_up=True))
            cursor = last_missed
    tick = next_fire_time(schedule, cursor)
    while tick is not None and tick <= now:
        fires.append(PlannedFire(at=tick))
        tick = next_fire_time(schedule, tick)
    return FirePlan(fires=tuple(fires), missed=missed, next_fire_at=tick)


def _next_candidate(schedule: CronSchedule, after: dt.datetime) -> dt.datetime | None:
    """APScheduler's next fire time after `after`, plus any skipped-hour tick it cannot see
    from an instant past the clock change (it only finds those when asked from before)."""
    start = (after + _TICK).astimezone(schedule.zone)
    found: dt.datetime | None = schedule.trigger.get_next_fire_time(None, start)
    candidates = [found.astimezone(dt.UTC)] if found is not None else []
    skipped = _skipped_hour_tick(schedule, after)
    if skipped is not None:
        candidates.append(skipped)
    return min(candidates, default=None)


def _skipped_hour_tick(schedule: CronSchedule, after: dt.datetime) -> dt.datetime | None:
    """The first tick after `after` whose wall time fell into a skipped hour that ended less
    than one shift ago, read with the offset in force before the change (see the docstring)."""
    earlier = after - MAX_CLOCK_SHIFT
    old = earlier.astimezone(schedule.zone).utcoffset()
    new = after.astimezone(schedule.zone).utcoffset()
    if old is None or new is None or new <= old:
        return None
    change = _clock_change(schedule, earlier, after, new)
    if after >= change + (new - old):
        return None  # every wall time of the skipped hour is already in the past
    old_clock = dt.timezone(old)
    tick: dt.datetime | None = schedule.trigger_in(old_clock).get_next_fire_time(
        None, (after + _TICK).astimezone(old_clock)
    )
    if tick is None or tick.astimezone(dt.UTC) >= change + (new - old):
        return None
    return tick.astimezone(dt.UTC)


def _clock_change(
    schedule: CronSchedule, before: dt.datetime, after: dt.datetime, new: dt.timedelta
) -> dt.datetime:
    """The first whole second in `(before, after]` with offset `new` (clock changes happen on
    whole seconds); bisection, about fourteen steps over `MAX_CLOCK_SHIFT`."""
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        instant = dt.datetime.fromtimestamp(middle, dt.UTC)
        if instant.astimezone(schedule.zone).utcoffset() == new:
            high = middle
        else:
            low = middle
    return dt.datetime.fromtimestamp(high, dt.UTC)


def _is_second_pass(schedule: CronSchedule, instant: dt.datetime) -> bool:
    """True when `instant`'s wall time happened already, before the clocks fell back."""
    local = instant.astimezone(schedule.zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
