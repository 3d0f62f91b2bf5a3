"""Trigger health: counters and last error per trigger key, in `trigger_health` and Prometheus.

Silent trigger failures are what operators fear most, so every intake outcome is counted:
accepted, deduplicated, filtered (every filter refused), no_match (no subscription) and
refused (authentication failed or the request was invalid, so no event exists). Recording is
best effort and happens after the intake committed: a failure here is logged, never returned
to the sender, whose event is already safe.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Final

import asyncpg
import msgspec
import structlog
from prometheus_client import Counter

from server.queue.client import Connection

log = structlog.get_logger(__name__)

TRIGGER_EVENTS = Counter(
    "switchyard_trigger_events_total", "Trigger intake outcomes", ["trigger_key", "outcome"]
)


class IntakeOutcome(StrEnum):
    ACCEPTED = "accepted"
    DEDUPLICATED = "deduplicated"
    FILTERED = "filtered"
    NO_MATCH = "no_match"
    REFUSED = "refused"


class TriggerHealth(msgspec.Struct, frozen=True, kw_only=True):
    last_event_at: dt.datetime | None = None
    accepted: int = 0
    deduplicated: int = 0
    filtered: int = 0
    no_match: int = 0
    refused: int = 0
    last_error: str | None = None
    last_error_at: dt.datetime | None = None


# The outcome names a counter column; the statement per outcome is fixed text (no formatting
# of values into SQL), one per enum member.
RECORD: Final = {
    outcome: f"""
INSERT INTO trigger_health (trigger_key, last_event_at, {outcome.value}, last_error, last_error_at)
VALUES ($1, CASE WHEN $3::bool THEN NULL ELSE now() END, 1, $2::text,
        CASE WHEN $2::text IS NULL THEN NULL ELSE now() END)
ON CONFLICT (trigger_key) DO UPDATE SET
  {outcome.value} = trigger_health.{outcome.value} + 1,
  last_event_at = CASE WHEN $3 THEN trigger_health.last_event_at ELSE now() END,
  last_error = coalesce($2, trigger_health.last_error),
  last_error_at = CASE WHEN $2 IS NULL THEN trigger_health.last_error_at ELSE now() END,
  updated_at = now()
"""  # noqa: S608 - the column name comes from the enum above, never from input
    for outcome in IntakeOutcome
}
HEALTH: Final = """
SELECT trigger_key, last_event_at, accepted, deduplicated, filtered, no_match, refused,
       last_error, last_error_at
FROM trigger_health WHERE trigger_key = ANY($1::text[])
"""


async def record_intake(
    pool: asyncpg.Pool, trigger_key: str, outcome: IntakeOutcome, *, error: str | None = None
) -> None:
    """Count one intake outcome for `trigger_key` (and its error, for refusals)."""
    TRIGGER_EVENTS.labels(trigger_key, outcome.value).inc()
    refused = outcome is IntakeOutcome.REFUSED
    try:
        async with pool.acquire(timeout=5) as connection:
            await connection.execute(RECORD[outcome], trigger_key, error, refused)
    except (OSError, asyncpg.PostgresError, TimeoutError) as failure:
        log.warning("trigger_health_not_recorded", trigger_key=trigger_key, error=repr(failure))


async def trigger_health(
    connection: Connection, trigger_keys: list[str]
) -> dict[str, TriggerHealth]:
    rows = await connection.fetch(HEALTH, trigger_keys)
    return {
        row["trigger_key"]: msgspec.convert(
            {k: v for k, v in dict(row).items() if k != "trigger_key"}, TriggerHealth
        )
        for row in rows
    }


RECORD_ERROR: Final = """
INSERT INTO trigger_health (trigger_key, last_error, last_error_at) VALUES ($1, $2, now())
ON CONFLICT (trigger_key) DO UPDATE
SET last_error = $2, last_error_at = now(), updated_at = now()
"""


async def record_trigger_error(pool: asyncpg.Pool, trigger_key: str, error: str) -> None:
    """Note a trigger's problem that is not an intake (a capture trigger that went missing)."""
    try:
        async with pool.acquire(timeout=5) as connection:
            await connection.execute(RECORD_ERROR, trigger_key, error[:2000])
    except (OSError, asyncpg.PostgresError, TimeoutError) as failure:
        log.warning("trigger_health_not_recorded", trigger_key=trigger_key, error=repr(failure))
