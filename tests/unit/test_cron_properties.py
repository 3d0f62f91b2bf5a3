"""Properties of the cron parser: any 5- or 6-field expression either parses or is refused with
the typed `ValidationError` (never another exception), and a parsed schedule's fire times,
followed one after another as the scheduler does, only ever move forward."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.errors import ValidationError
from server.triggers.cron import CronSchedule, parse_schedule
from server.triggers.schedule import next_fire_time

ZONES = st.sampled_from(
    [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Nope/Zone",
    ]
)
NUMBERS = st.integers(min_value=-1, max_value=70).map(str)
NAMES = st.sampled_from(["mon", "sun", "fri", "jan", "dec", "last", "xyz", "L", "?", ""])
ATOMS = st.one_of(
    st.just("*"),
    NUMBERS,
    NAMES,
    st.builds(lambda a, b: f"{a}-{b}", NUMBERS | NAMES, NUMBERS | NAMES),
    st.builds(lambda a, n: f"{a}/{n}", st.just("*") | NUMBERS, NUMBERS),
    st.builds(lambda a, b, n: f"{a}-{b}/{n}", NUMBERS, NUMBERS, NUMBERS),
)
FIELDS = st.lists(ATOMS, min_size=1, max_size=3).map(",".join)
ANY_FIELDS = st.lists(FIELDS, min_size=5, max_size=6).map(" ".join)


def in_range(low: int, high: int) -> st.SearchStrategy[str]:
    """One field of numbers in `[low, high]`: `*`, `n`, `a-b`, `*/n`, `a-b/n` or a list."""
    number = st.integers(low, high)
    item = st.one_of(
        st.just("*"),
        number.map(str),
        st.tuples(number, number).map(lambda ab: f"{min(ab)}-{max(ab)}"),
        st.integers(1, high - low + 1).map(lambda n: f"*/{n}"),
        st.tuples(number, number, st.integers(1, 10)).map(
            lambda abn: f"{min(abn[:2])}-{max(abn[:2])}/{abn[2]}"
        ),
    )
    return st.lists(item, min_size=1, max_size=3).map(",".join)


SECONDS = in_range(0, 59)
# Day and weekday: at most one of them restricted (the parser refuses both, by design).
DAY_AND_WEEKDAY = st.one_of(
    st.tuples(in_range(1, 31), st.just("*")), st.tuples(st.just("*"), in_range(0, 7))
)
VALID_FIVE = st.builds(
    lambda minute, hour, days, month: f"{minute} {hour} {days[0]} {month} {days[1]}",
    in_range(0, 59), in_range(0, 23), DAY_AND_WEEKDAY, in_range(1, 12),
)  # fmt: skip
WELL_FORMED = st.one_of(VALID_FIVE, st.builds(lambda s, rest: f"{s} {rest}", SECONDS, VALID_FIVE))
EXPRESSIONS = st.one_of(
    ANY_FIELDS,
    WELL_FORMED,
    st.sampled_from(["@daily", "@hourly", "@weekly", "@monthly", "@yearly", "@never", "@"]),
    st.text(max_size=40),
)
INSTANTS = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=dt.datetime(2060, 1, 1),  # noqa: DTZ001
    timezones=st.just(dt.UTC),
)


def parse_or_refuse(cron: str, timezone: str) -> CronSchedule | None:
    """The schedule, or None when the parser refused it with its typed error."""
    try:
        return parse_schedule(cron, timezone)
    except ValidationError as error:
        refusal = error
    assert refusal.problems, "a refusal names the field at fault"
    assert {p["field"] for p in refusal.problems} <= {"cron", "timezone"}
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cron=EXPRESSIONS, timezone=ZONES)
def test_any_expression_parses_or_is_refused_with_the_typed_error(cron: str, timezone: str) -> None:
    schedule = parse_or_refuse(cron, timezone)
    if schedule is not None:
        assert schedule.cron == cron
        assert len(schedule.fields) == 6


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cron=WELL_FORMED | ANY_FIELDS, timezone=ZONES, start=INSTANTS)
def test_fire_times_of_a_parsed_schedule_strictly_increase(
    cron: str, timezone: str, start: dt.datetime
) -> None:
    schedule = parse_or_refuse(cron, timezone)
    if schedule is None:
        return
    previous = start
    for _ in range(6):
        tick = next_fire_time(schedule, previous)
        if tick is None:
            break  # it never fires again (an impossible date such as 31 February)
        assert tick > previous, (cron, timezone, previous, tick)
        assert tick.utcoffset() == dt.timedelta(0)
        previous = tick
