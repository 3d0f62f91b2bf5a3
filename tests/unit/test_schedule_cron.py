"""Cron expressions and time zones: accepted forms, classic weekdays, refusals naming the field."""

from __future__ import annotations

import datetime as dt

import pytest

from server.errors import ValidationError
from server.triggers.cron import cron_fields, parse_schedule
from server.triggers.schedule import next_fire_time, validate_schedule

UTC = dt.UTC
MONDAY = dt.datetime(2024, 6, 3, 12, 0, tzinfo=UTC)  # a Monday, noon


def fires(cron: str, after: dt.datetime, count: int, timezone: str = "UTC") -> list[dt.datetime]:
    schedule = parse_schedule(cron, timezone)
    times: list[dt.datetime] = []
    cursor = after
    for _ in range(count):
        tick = next_fire_time(schedule, cursor)
        assert tick is not None
        times.append(tick)
        cursor = tick
    return times


def test_five_fields_fire_on_the_minute_and_six_fields_take_seconds_first() -> None:
    assert fires("*/15 * * * *", MONDAY, 2) == [
        dt.datetime(2024, 6, 3, 12, 15, tzinfo=UTC),
        dt.datetime(2024, 6, 3, 12, 30, tzinfo=UTC),
    ]
    assert fires("*/10 * * * * *", MONDAY, 2) == [
        dt.datetime(2024, 6, 3, 12, 0, 10, tzinfo=UTC),
        dt.datetime(2024, 6, 3, 12, 0, 20, tzinfo=UTC),
    ]


def test_next_fire_time_is_strictly_after_the_given_instant() -> None:
    assert fires("0 12 * * *", MONDAY, 1) == [dt.datetime(2024, 6, 4, 12, tzinfo=UTC)]
    just_before = MONDAY - dt.timedelta(microseconds=1)
    assert fires("0 12 * * *", just_before, 1) == [MONDAY]


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("sat,sun", "sun,sat"),
        ("MON-FRI", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("1/3", "mon,thu"),
        ("0-7", "*"),
        ("*", "*"),
    ],
)
def test_weekdays_follow_classic_cron_where_zero_and_seven_are_sunday(
    weekday: str, expected: str
) -> None:
    assert cron_fields(f"0 9 * * {weekday}")[5] == expected


def test_weekday_one_to_five_fires_monday_to_friday() -> None:
    days = {tick.strftime("%a") for tick in fires("0 9 * * 1-5", MONDAY, 10)}
    assert days == {"Mon", "Tue", "Wed", "Thu", "Fri"}


def test_macros_expand_to_their_cron() -> None:
    assert fires("@daily", MONDAY, 1) == [dt.datetime(2024, 6, 4, tzinfo=UTC)]
    assert fires("@hourly", MONDAY, 1) == [dt.datetime(2024, 6, 3, 13, tzinfo=UTC)]
    assert fires("@weekly", MONDAY, 1) == [dt.datetime(2024, 6, 9, tzinfo=UTC)]  # Sunday


def test_a_schedule_fires_on_its_time_zone_wall_clock() -> None:
    assert fires("0 9 * * *", MONDAY, 1, "Europe/Berlin") == [
        dt.datetime(2024, 6, 4, 7, tzinfo=UTC)  # 09:00 CEST
    ]


@pytest.mark.parametrize(
    "cron",
    [
        "61 * * * *",
        "* * * *",
        "* * * * * * *",
        "every day",
        "0 9 * * 8",
        "0 9 * * fri-mon",
        "0 9 1 * 1",
        "",
    ],
)
def test_invalid_cron_names_the_field_and_gives_an_example(cron: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_schedule(cron, "UTC")
    [problem] = raised.value.problems
    assert problem["field"] == "cron"
    assert "for example '*/5 * * * *'" in problem["message"]


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "CEST", "../../etc/passwd", "", "utc "])
def test_a_time_zone_must_be_an_iana_name(timezone: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_schedule("* * * * *", timezone)
    [problem] = raised.value.problems
    assert problem["field"] == "timezone"
    assert "Europe/Berlin" in problem["message"]


def test_both_fields_are_reported_when_both_are_wrong() -> None:
    with pytest.raises(ValidationError) as raised:
        parse_schedule("nope", "Nowhere/City")
    assert [p["field"] for p in raised.value.problems] == ["timezone", "cron"]


def test_a_cron_that_never_fires_again_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        validate_schedule("0 0 30 2 *", "UTC", now=MONDAY)  # February 30th
    assert raised.value.problems[0]["field"] == "cron"
    assert "never fires" in str(raised.value)


def test_schedules_compare_by_cron_and_time_zone() -> None:
    assert parse_schedule("* * * * *", "UTC") == parse_schedule("* * * * *", "UTC")
    assert parse_schedule("* * * * *", "UTC") != parse_schedule("* * * * *", "Europe/Paris")
