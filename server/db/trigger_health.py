"""Trigger health: counters and last error per trigger key, in `trigger_health` and Prometheus.

Silent trigger failures are what operators fear most, so every intake outcome is counted:
accepted, deduplicated, filtered (every filter refused), no_match (no subscription), skipped
(every execution it would start was skipped by a concurrency limit or a schedule's overlap
policy) and refused (authentication failed or the request was invalid, so no event exists). Recording is
best effort and happens after the intake committed: a failure here is logged, never returned
to the sender, whose event is already safe.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from contextlib import suppress
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
    SKIPPED = "skipped"


class TriggerHealth(msgspec.Struct, frozen=True, kw_only=True):
    last_event_at: dt.datetime | None = None
    accepted: int = 0
    deduplicated: int = 0
    filtered: int = 0
    no_match: int = 0
    refused: int = 0
    skipped: int = 0
    last_error: str | None = None
    last_error_at: dt.datetime | None = None


HEALTH: Final = """
SELECT trigger_key, last_event_at, accepted, deduplicated, filtered, no_match, refused,
       skipped, last_error, last_error_at
FROM trigger_health WHERE trigger_key = ANY($1::text[])
"""


class IntakeRecorder:
    """Counts intake outcomes in memory and writes them to `trigger_health` once a second.

    Every webhook or event of one trigger updates the same health row; written per request,
    those updates queue behind each other and cost a commit each. Buffered, a busy trigger
    costs one upsert per flush. `record` is synchronous and never fails; `run` flushes until
    stopped and once more on the way out. Counts not yet flushed when a process dies are lost:
    health is an indicator, the events themselves are durable.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._pending: dict[str, _Delta] = {}

    def record(self, trigger_key: str, outcome: IntakeOutcome, *, error: str | None = None) -> None:
        TRIGGER_EVENTS.labels(trigger_key, outcome.value).inc()
        delta = self._pending.setdefault(trigger_key, _Delta())
        delta.counts[outcome] = delta.counts.get(outcome, 0) + 1
        if outcome is not IntakeOutcome.REFUSED:
            delta.last_event_at = dt.datetime.now(dt.UTC)
        if error is not None:
            delta.last_error = error[:2000]

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for trigger_key, delta in pending.items():
            try:
                async with self._pool.acquire(timeout=5) as connection:
                    await connection.execute(
                        ADD_COUNTS, trigger_key, delta.last_event_at,
                        *(delta.counts.get(outcome, 0) for outcome in IntakeOutcome),
                        delta.last_error,
                    )  # fmt: skip
            except (OSError, asyncpg.PostgresError, TimeoutError) as failure:
                log.warning(
                    "trigger_health_not_recorded", trigger_key=trigger_key, error=repr(failure)
                )

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every FLUSH_INTERVAL until `stop` is set, then a last time."""
        while not stop.is_set():
            with suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL_SECONDS):
                    await stop.wait()
            await self.flush()


class _Delta:
    def __init__(self) -> None:
        self.counts: dict[IntakeOutcome, int] = {}
        self.last_event_at: dt.datetime | None = None
        self.last_error: str | None = None


FLUSH_INTERVAL_SECONDS: Final = 1.0
# $3..$8 are the counts in IntakeOutcome's order: accepted, deduplicated, filtered, no_match,
# refused, skipped.
ADD_COUNTS: Final = """
INSERT INTO trigger_health AS h (trigger_key, last_event_at, accepted, deduplicated, filtered,
                                 no_match, refused, skipped, last_error, last_error_at)
VALUES ($1, $2::timestamptz, $3, $4, $5, $6, $7, $8, $9::text,
        CASE WHEN $9::text IS NULL THEN NULL ELSE now() END)
ON CONFLICT (trigger_key) DO UPDATE SET
  last_event_at = greatest(h.last_event_at, excluded.last_event_at),
  accepted = h.accepted + excluded.accepted,
  deduplicated = h.deduplicated + excluded.deduplicated,
  filtered = h.filtered + excluded.filtered,
  no_match = h.no_match + excluded.no_match,
  refused = h.refused + excluded.refused,
  skipped = h.skipped + excluded.skipped,
  last_error = coalesce(excluded.last_error, h.last_error),
  last_error_at = coalesce(excluded.last_error_at, h.last_error_at),
  updated_at = now()
"""


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
