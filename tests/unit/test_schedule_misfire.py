"""Misfire decisions: late ticks fire, missed ones fire once (run_once) or never (skip)."""

from __future__ import annotations

import datetime as dt
import time
import uuid

from server.triggers.cron import parse_schedule
from server.triggers.schedule import (
    MISFIRE_GRACE,
    MisfirePolicy,
    PlannedFire,
    fire_idempotency_key,
    first_unfired_tick,
    plan_fires,
)

UTC = dt.UTC
DAILY = parse_schedule("0 9 * * *", "UTC")
EVERY_SECOND = parse_schedule("* * * * * *", "UTC")
NOW = dt.datetime(2024, 6, 10, 12, 0, 0, 250_000, tzinfo=UTC)


def test_nothing_fires_before_the_pending_tick() -> None:
    tomorrow = dt.datetime(2024, 6, 11, 9, tzinfo=UTC)
    plan = plan_fires(DAILY, first_unfired=tomorrow, now=NOW, policy=MisfirePolicy.RUN_ONCE)
    assert (plan.fires, plan.missed, plan.next_fire_at) == ((), None, tomorrow)


def test_a_tick_that_just_passed_fires_and_the_plan_moves_to_the_next() -> None:
    plan = plan_fires(
        EVERY_SECOND,
        first_unfired=NOW.replace(microsecond=0),
        now=NOW,
        policy=MisfirePolicy.SKIP,
    )
    assert plan.fires == (PlannedFire(at=NOW.replace(microsecond=0)),)
    assert plan.next_fire_at == NOW.replace(microsecond=0) + dt.timedelta(seconds=1)


def test_late_ticks_within_the_grace_each_fire_under_either_policy() -> None:
    pending = NOW.replace(microsecond=0) - dt.timedelta(seconds=5)
    for policy in MisfirePolicy:
        plan = plan_fires(EVERY_SECOND, first_unfired=pending, now=NOW, policy=policy)
        assert [f.at for f in plan.fires] == [pending + dt.timedelta(seconds=n) for n in range(6)]
        assert plan.missed is None
        assert not any(f.catch_up for f in plan.fires)


def test_after_downtime_run_once_fires_one_catch_up_for_the_most_recent_missed_tick() -> None:
    three_days_ago = dt.datetime(2024, 6, 7, 9, tzinfo=UTC)
    plan = plan_fires(DAILY, first_unfired=three_days_ago, now=NOW, policy=MisfirePolicy.RUN_ONCE)
    today = dt.datetime(2024, 6, 10, 9, tzinfo=UTC)
    assert plan.fires == (PlannedFire(at=today, catch_up=True),)
    assert plan.missed is not None
    assert (plan.missed.first, plan.missed.last) == (three_days_ago, today)
    assert plan.next_fire_at == dt.datetime(2024, 6, 11, 9, tzinfo=UTC)


def test_after_downtime_skip_fires_nothing_and_plans_the_next_tick() -> None:
    three_days_ago = dt.datetime(2024, 6, 7, 9, tzinfo=UTC)
    plan = plan_fires(DAILY, first_unfired=three_days_ago, now=NOW, policy=MisfirePolicy.SKIP)
    assert plan.fires == ()
    assert plan.missed is not None
    assert plan.next_fire_at == dt.datetime(2024, 6, 11, 9, tzinfo=UTC)


def test_a_week_of_missed_seconds_is_one_catch_up_not_one_fire_per_tick() -> None:
    week_ago = NOW.replace(microsecond=0) - dt.timedelta(days=7)
    started = time.monotonic()
    plan = plan_fires(EVERY_SECOND, first_unfired=week_ago, now=NOW, policy=MisfirePolicy.RUN_ONCE)
    assert time.monotonic() - started < 1.0
    catch_ups = [f for f in plan.fires if f.catch_up]
    late = [f for f in plan.fires if not f.catch_up]
    assert [f.at for f in catch_ups] == [NOW.replace(microsecond=0) - MISFIRE_GRACE]
    assert len(late) == MISFIRE_GRACE.seconds  # the ticks still within the grace
    assert all(NOW - f.at <= MISFIRE_GRACE for f in late)


def test_the_first_unfired_tick_follows_the_last_fire_but_never_precedes_the_plan() -> None:
    last_fire = dt.datetime(2024, 6, 1, 9, tzinfo=UTC)
    assert first_unfired_tick(DAILY, last_fire_at=last_fire, next_fire_at=None, now=NOW) == (
        dt.datetime(2024, 6, 2, 9, tzinfo=UTC)
    )
    # Re-enabled yesterday: the API planned from then, so the paused days are not missed.
    replanned = dt.datetime(2024, 6, 10, 9, tzinfo=UTC)
    assert (
        first_unfired_tick(DAILY, last_fire_at=last_fire, next_fire_at=replanned, now=NOW)
        == replanned
    )
    assert first_unfired_tick(DAILY, last_fire_at=None, next_fire_at=None, now=NOW) == (
        dt.datetime(2024, 6, 11, 9, tzinfo=UTC)
    )


def test_the_idempotency_key_names_the_schedule_and_the_tick_in_utc() -> None:
    schedule_id = uuid.UUID("00000000-0000-4000-8000-000000000001")
    berlin = dt.datetime(2024, 6, 10, 11, tzinfo=parse_schedule("* * * * *", "Europe/Berlin").zone)
    assert fire_idempotency_key(schedule_id, berlin) == (
        "schedule:00000000-0000-4000-8000-000000000001:2024-06-10T09:00:00+00:00"
    )
