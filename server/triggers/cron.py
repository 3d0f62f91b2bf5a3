"""Cron expressions and time zones of schedules: parsed once, validated with a usable message.

A schedule's `cron` has five fields (`minute hour day month weekday`), six with seconds first
(`second minute hour day month weekday`), or is a macro (`@yearly`, `@monthly`, `@weekly`,
`@daily`, `@hourly`). Fields use APScheduler 3's cron syntax (`*`, `a-b`, `*/n`, `a-b/n`,
`a,b`, month and weekday names, `last` for the last day of the month), except the weekday,
which follows classic cron: `0` and `7` are Sunday, `1-5` is Monday to Friday (APScheduler 3
counts from Monday, a historical mismatch it documents). A cron that restricts both the day of
the month and the weekday is refused: classic cron fires when *either* matches, APScheduler
when *both* do, and a schedule must not mean two things. `timezone` is an IANA name
(`Europe/Berlin`, `UTC`); fire times are computed on that zone's wall clock (see
`server.triggers.schedule` for daylight-saving changes). Pure: no clock, no I/O beyond reading
the time zone database that `zoneinfo` ships with.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo, available_timezones

from apscheduler.triggers.cron import CronTrigger

from server.errors import ValidationError

CRON_EXAMPLE: Final = "'*/5 * * * *' (every five minutes) or '*/10 * * * * *' (every ten seconds)"
TIMEZONE_EXAMPLE: Final = "'Europe/Berlin', 'America/New_York' or 'UTC'"
MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
WEEKDAY_NAMES: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Hour fields that mean "every hour": such schedules fire in both passes of a repeated hour.
EVERY_HOUR: Final = frozenset({"*", "*/1", "0-23"})
_WEEKDAY_ITEM: Final = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression in a time zone; compare and hash by `(cron, timezone)`."""

    cron: str
    timezone: str
    zone: ZoneInfo = field(compare=False, repr=False)
    # second, minute, hour, day, month, weekday in APScheduler's syntax (weekday as names)
    fields: tuple[str, ...] = field(compare=False, repr=False)
    trigger: CronTrigger = field(compare=False, repr=False)

    @property
    def fires_every_hour(self) -> bool:
        """True when the hour field is a wildcard (a wall-clock interval, not a time of day)."""
        return self.fields[2] in EVERY_HOUR

    def trigger_in(self, zone: dt.tzinfo) -> CronTrigger:
        """The same fields on another clock (a fixed offset, for skipped wall-clock hours)."""
        return _trigger(self.fields, zone)


def parse_schedule(cron: str, timezone: str) -> CronSchedule:
    """Parse `cron` in `timezone`.

    Raises:
        ValidationError: naming each invalid field (`cron`, `timezone`) with an example.
    """
    problems: list[dict[str, str]] = []
    zone: ZoneInfo | None = None
    fields: tuple[str, ...] = ()
    trigger: CronTrigger | None = None
    try:
        zone = parse_timezone(timezone)
    except ValueError as error:
        problems.append(_problem("timezone", str(error), TIMEZONE_EXAMPLE))
    try:
        fields = cron_fields(cron)
        trigger = _trigger(fields, zone or dt.UTC)
    except ValueError as error:
        reason = str(error)
        if not reason.startswith(repr(cron)):
            reason = f"{cron!r} is not valid: {reason}"
        problems.append(_problem("cron", reason, CRON_EXAMPLE))
    if problems or zone is None or trigger is None:
        raise ValidationError(
            "; ".join(f"{p['field']}: {p['message']}" for p in problems), problems
        )
    return CronSchedule(cron=cron, timezone=timezone, zone=zone, fields=fields, trigger=trigger)


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA zone `name`; a ValueError for anything else (abbreviations, paths, typos)."""
    if name not in _iana_names():
        raise ValueError(f"{name!r} is not an IANA time zone name")
    return ZoneInfo(name)


@lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones())


def cron_fields(cron: str) -> tuple[str, ...]:
    """The six fields of `cron` (seconds first, weekday as names); ValueError if malformed."""
    text = MACROS.get(cron.strip().lower(), cron)
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ValueError(
            f"{cron!r} has {len(parts)} fields; write five (minute hour day month weekday), "
            "six with seconds first, or a macro such as @daily"
        )
    second, minute, hour, day, month, weekday = parts
    days = _weekdays(weekday.lower())
    if day not in ("*", "?") and days != "*":
        raise ValueError(
            f"{cron!r} restricts both the day of the month and the weekday, which classic cron "
            "and APScheduler read differently; restrict one of them (or use two schedules)"
        )
    return (second, minute, hour, "*" if day == "?" else day, month, days)


def _weekdays(expression: str) -> str:
    """A classic-cron weekday field (0 or 7 = Sunday) as APScheduler weekday names."""
    if expression in ("*", "?"):
        return "*"
    chosen: set[int] = set()
    for item in expression.split(","):
        match = _WEEKDAY_ITEM.match(item)
        if match is None:
            raise ValueError(f"weekday item {item!r} is not valid (use 0-7, sun-sat, a-b, */n)")
        span, step = match.group(1), int(match.group(2) or 1)
        if step < 1:
            raise ValueError(f"weekday step in {item!r} must be at least 1")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first, last = (_weekday_number(part) for part in span.split("-"))
        else:
            first = _weekday_number(span)
            last = 6 if match.group(2) else first
        if first > last:
            raise ValueError(f"weekday range {item!r} runs backwards; write it as two ranges")
        chosen.update(day % 7 for day in range(first, last + 1, step))
    if len(chosen) == 7:
        return "*"
    # APScheduler numbers Monday 0; its names are unambiguous.
    return ",".join(WEEKDAY_NAMES[day] for day in sorted(chosen))


def _weekday_number(value: str) -> int:
    if value in WEEKDAY_NAMES:
        return WEEKDAY_NAMES.index(value)
    if value.isdigit() and int(value) <= 7:
        return int(value)
    raise ValueError(
        f"weekday {value!r} is not valid (use 0-7, where 0 and 7 are Sunday, or sun-sat)"
    )


def _trigger(fields: tuple[str, ...], zone: dt.tzinfo) -> CronTrigger:
    second, minute, hour, day, month, weekday = fields
    return CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=weekday,
        timezone=zone,
    )


def _problem(name: str, message: str, example: str) -> dict[str, str]:
    return {"field": name, "message": f"{message}; for example {example}"}
