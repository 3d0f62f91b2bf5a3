"""One schedule tick becoming one event: the scheduler's writes to `schedule_trigger`.

`fire_schedule` runs in one transaction: it locks the schedule's row, checks that the tick
still belongs to it (enabled, same cron and time zone as the scheduler planned with: a change
committed a moment ago wins over a replica's stale copy), records the event through
`accept_event` with the tick's idempotency key, and moves `last_fire_at`/`next_fire_at`
forward, never back. Every replica fires every tick; the first insert wins and the others get
`duplicate=True` and start nothing. The row lock also serialises replicas per schedule, so a
change through the API (which updates the same row) is ordered before or after a fire, never
in the middle. Payload, trigger key and overlap policy are read from the locked row, so a fire
always carries the committed ones; with `overlap` other than `allow` the fire's executions count
in the schedule's overlap group (`server.runs.concurrency`), and a skipped one is recorded on
the fire's event.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from server.db.pool import transaction
from server.db.schedules import TRIGGER_TYPE
from server.db.tables import ScheduleTrigger
from server.runs.concurrency import schedule_overlap
from server.runs.intake import AcceptedEvent, accept_event
from server.triggers.schedule import OverlapPolicy, fire_idempotency_key

MAX_ERROR_CHARS = 2000


class FiredTick(msgspec.Struct, frozen=True, kw_only=True):
    trigger_key: str
    event: AcceptedEvent


async def fire_schedule(
    schedule_id: uuid.UUID,
    *,
    cron: str,
    timezone: str,
    fire_at: dt.datetime,
    next_fire_at: dt.datetime | None,
    source: dict[str, Any],
) -> FiredTick | None:
    """Record the tick `fire_at` of a schedule as an event; None when the schedule is gone,
    disabled, or planned with another cron or time zone than the one committed now."""
    async with transaction() as tx:
        row = await (
            ScheduleTrigger.select(
                ScheduleTrigger.trigger_key,
                ScheduleTrigger.cron,
                ScheduleTrigger.timezone,
                ScheduleTrigger.enabled,
                ScheduleTrigger.payload,
                ScheduleTrigger.overlap,
            )
            .where(ScheduleTrigger.id == schedule_id)
            .lock_rows("UPDATE")
            .output(load_json=True)
            .first()
            .run()
        )
        if row is None or not row["enabled"] or (row["cron"], row["timezone"]) != (cron, timezone):
            return None
        event = await accept_event(
            tx.connection,
            trigger_key=row["trigger_key"],
            trigger_type=TRIGGER_TYPE,
            payload=row["payload"],
            idempotency_key=fire_idempotency_key(schedule_id, fire_at),
            source=source,
            overlap=schedule_overlap(schedule_id, OverlapPolicy(row["overlap"])),
        )
        table = ScheduleTrigger
        await (
            table.update(
                {
                    table.last_fire_at: fire_at,
                    table.next_fire_at: next_fire_at,
                    table.last_error: None,
                }
            )
            .where(
                (table.id == schedule_id)
                & (table.last_fire_at.is_null() | (table.last_fire_at < fire_at))
            )
            .run()
        )
    return FiredTick(trigger_key=row["trigger_key"], event=event)


async def advance_next_fire(
    schedule_id: uuid.UUID, *, cron: str, timezone: str, next_fire_at: dt.datetime
) -> None:
    """Move the planned next fire forward past skipped ticks (never back, never for a schedule
    changed or disabled meanwhile)."""
    table = ScheduleTrigger
    await (
        table.update({table.next_fire_at: next_fire_at})
        .where(
            (table.id == schedule_id)
            & (table.enabled == True)  # noqa: E712 - a SQL comparison
            & (table.cron == cron)
            & (table.timezone == timezone)
            & (table.next_fire_at.is_null() | (table.next_fire_at < next_fire_at))
        )
        .run()
    )


async def record_schedule_error(schedule_id: uuid.UUID, error: str) -> None:
    """Keep the latest fire error on the schedule, for `GET /schedules/{id}`."""
    await (
        ScheduleTrigger.update({ScheduleTrigger.last_error: error[:MAX_ERROR_CHARS]})
        .where(ScheduleTrigger.id == schedule_id)
        .run()
    )
