"""Fire times across daylight-saving changes, asked from a fake clock (plain instants)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from server.triggers.cron import parse_schedule
from server.triggers.schedule import (
    fire_times_between,
    last_fire_time_between,
    next_fire_time,
)

UTC = dt.UTC
NEW_YORK = "America/New_York"


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def chain(cron: str, timezone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Fire times by following each fire to the next, as a running scheduler does."""
    return fire_times_between(parse_schedule(cron, timezone), start, end, limit=100_000)


def wall(instants: list[dt.datetime], timezone: str) -> list[str]:
    zone = parse_schedule("* * * * *", timezone).zone
    return [i.astimezone(zone).strftime("%m-%d %H:%M %Z") for i in instants]


# -- spring forward: 2024-03-10, 02:00 EST becomes 03:00 EDT --------------------------------


def test_spring_forward_a_daily_time_in_the_skipped_hour_fires_once_an_hour_later() -> None:
    fires = chain("30 2 * * *", NEW_YORK, at(2024, 3, 8, 12), at(2024, 3, 11, 12))
    assert fires == [at(2024, 3, 9, 7, 30), at(2024, 3, 10, 7, 30), at(2024, 3, 11, 6, 30)]
    assert wall(fires, NEW_YORK) == ["03-09 02:30 EST", "03-10 03:30 EDT", "03-11 02:30 EDT"]


def test_spring_forward_the_skipped_tick_is_found_from_any_instant_before_it() -> None:
    schedule = parse_schedule("30 2 * * *", NEW_YORK)
    # Every ten minutes from 01:00 EST to 03:20 EDT: APScheduler alone jumps to the next day
    # when asked from after the clock change (03:00 EDT, 07:00 UTC); ours does not.
    for minutes in range(0, 90, 10):
        asked = at(2024, 3, 10, 6) + dt.timedelta(minutes=minutes)
        assert next_fire_time(schedule, asked) == at(2024, 3, 10, 7, 30), asked
    assert next_fire_time(schedule, at(2024, 3, 10, 7, 30)) == at(2024, 3, 11, 6, 30)


def test_spring_forward_an_hourly_schedule_loses_no_real_hour() -> None:
    fires = chain("0 * * * *", NEW_YORK, at(2024, 3, 10, 5), at(2024, 3, 10, 8))
    assert wall(fires, NEW_YORK) == ["03-10 01:00 EST", "03-10 03:00 EDT", "03-10 04:00 EDT"]
    assert fires == [at(2024, 3, 10, 6), at(2024, 3, 10, 7), at(2024, 3, 10, 8)]


def test_spring_forward_in_other_zones_and_half_hour_shifts() -> None:
    berlin = chain("30 2 * * *", "Europe/Berlin", at(2024, 3, 30, 12), at(2024, 3, 31, 12))
    assert wall(berlin, "Europe/Berlin") == ["03-31 03:30 CEST"]
    # Lord Howe Island moves its clocks by 30 minutes: 02:00 becomes 02:30.
    howe = chain("15 2 * * *", "Australia/Lord_Howe", at(2024, 10, 5), at(2024, 10, 6, 12))
    assert howe == [at(2024, 10, 5, 15, 45)]  # 02:45 +11:00


# -- fall back: 2024-11-03, 02:00 EDT becomes 01:00 EST ---------------------------------------


def test_fall_back_a_daily_time_in_the_repeated_hour_fires_once_on_its_first_pass() -> None:
    fires = chain("30 1 * * *", NEW_YORK, at(2024, 11, 2, 12), at(2024, 11, 4, 12))
    assert fires == [at(2024, 11, 3, 5, 30), at(2024, 11, 4, 6, 30)]
    assert wall(fires, NEW_YORK) == ["11-03 01:30 EDT", "11-04 01:30 EST"]
    # Asked from inside the hour between the two passes: still not the second pass.
    schedule = parse_schedule("30 1 * * *", NEW_YORK)
    assert next_fire_time(schedule, at(2024, 11, 3, 6, 10)) == at(2024, 11, 4, 6, 30)


def test_fall_back_fixed_hours_fire_once_and_wildcard_hours_keep_their_interval() -> None:
    fixed = chain("*/30 1-2 * * *", NEW_YORK, at(2024, 11, 3, 4), at(2024, 11, 3, 8))
    assert wall(fixed, NEW_YORK) == [
        "11-03 01:00 EDT",
        "11-03 01:30 EDT",
        "11-03 02:00 EST",
        "11-03 02:30 EST",
    ]
    every_half_hour = chain("*/30 * * * *", NEW_YORK, at(2024, 11, 3, 4, 45), at(2024, 11, 3, 7))
    assert every_half_hour == [at(2024, 11, 3, 5) + dt.timedelta(minutes=30 * n) for n in range(5)]
    assert wall(every_half_hour, NEW_YORK)[:4] == [
        "11-03 01:00 EDT",
        "11-03 01:30 EDT",
        "11-03 01:00 EST",
        "11-03 01:30 EST",
    ]


def test_fall_back_with_a_half_hour_shift() -> None:
    howe = chain("40 1 * * *", "Australia/Lord_Howe", at(2024, 4, 6, 12), at(2024, 4, 7, 12))
    assert howe == [at(2024, 4, 6, 14, 40)]  # 01:40 +11:00, not again at 01:40 +10:30


# -- the same answer however the question is asked -------------------------------------------

DST_WINDOWS = [
    ("30 2 * * *", NEW_YORK, at(2024, 3, 9), at(2024, 3, 12)),
    ("*/20 1-3 * * *", NEW_YORK, at(2024, 3, 9), at(2024, 3, 12)),
    ("30 1 * * *", NEW_YORK, at(2024, 11, 2), at(2024, 11, 5)),
    ("*/20 * * * *", NEW_YORK, at(2024, 11, 2), at(2024, 11, 5)),
    ("15 2 * * *", "Australia/Lord_Howe", at(2024, 10, 4), at(2024, 10, 7)),
    ("45 1 * * *", "Europe/Berlin", at(2024, 10, 26), at(2024, 10, 29)),
]


@settings(max_examples=200, deadline=None)
@given(window=st.sampled_from(DST_WINDOWS), fraction=st.floats(0, 1))
def test_next_and_last_fire_times_agree_with_the_chain_from_any_instant(
    window: tuple[str, str, dt.datetime, dt.datetime], fraction: float
) -> None:
    cron, timezone, start, end = window
    schedule = parse_schedule(cron, timezone)
    fires = chain(cron, timezone, start, end + dt.timedelta(days=2))
    asked = start + (end - start) * fraction
    assert next_fire_time(schedule, asked) == min(f for f in fires if f > asked)
    earlier = [f for f in fires if f <= asked]
    assert last_fire_time_between(schedule, start, asked) == (earlier[-1] if earlier else None)


def test_the_last_fire_of_a_week_of_seconds_is_found_without_walking_the_week() -> None:
    schedule = parse_schedule("* * * * * *", "UTC")
    until = at(2024, 1, 8) + dt.timedelta(milliseconds=500)
    assert last_fire_time_between(schedule, at(2024, 1, 1), until) == at(2024, 1, 8)
    assert last_fire_time_between(schedule, until, until + dt.timedelta(milliseconds=100)) is None
