"""Cron schedules (table `schedule_trigger`): create, read, change, delete, list.

Every change runs in one transaction that also sends `pg_notify('switchyard_schedules', id)`,
so scheduler replicas apply it at once (they resync periodically too, in case a notification is
lost). Cron and time zone are validated by `server.triggers` before anything is written. The
plan the scheduler reads is kept honest here: creating a schedule, re-enabling it, or giving it
another cron or time zone sets `next_fire_at` to the first tick after now (disabling clears
it), so a paused schedule or a replaced cron never counts as missed ticks to catch up. A
schedule's `trigger_key` is registered as a `schedule` trigger source if it is not registered
yet; a key registered with another type is a conflict. `overlap` (`allow`, `skip`,
`buffer_one`) is what a fire does while an execution the schedule started is unfinished
(applied by `server.runs.concurrency` when the fire is recorded).
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any, Final

import msgspec
import structlog

from server.db.keyset import after_position
from server.db.pool import transaction
from server.db.registry import register_trigger, trigger_type_of
from server.db.tables import ScheduleTrigger
from server.errors import ConflictError, NotFoundError
from server.triggers.schedule import (
    MisfirePolicy,
    OverlapPolicy,
    next_fire_time,
    validate_schedule,
)

log = structlog.get_logger(__name__)

SCHEDULE_CHANNEL: Final = "switchyard_schedules"
TRIGGER_TYPE: Final = "schedule"
# Changing one of these re-plans the schedule from now.
REPLANNING_FIELDS: Final = frozenset({"cron", "timezone", "enabled"})


class ScheduleView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    trigger_key: str
    cron: str
    timezone: str
    payload: dict[str, Any]
    enabled: bool
    misfire_policy: MisfirePolicy
    overlap: OverlapPolicy
    last_fire_at: dt.datetime | None
    next_fire_at: dt.datetime | None
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


_COLUMNS = (
    ScheduleTrigger.id,
    ScheduleTrigger.trigger_key,
    ScheduleTrigger.cron,
    ScheduleTrigger.timezone,
    ScheduleTrigger.payload,
    ScheduleTrigger.enabled,
    ScheduleTrigger.misfire_policy,
    ScheduleTrigger.overlap,
    ScheduleTrigger.last_fire_at,
    ScheduleTrigger.next_fire_at,
    ScheduleTrigger.last_error,
    ScheduleTrigger.created_at,
    ScheduleTrigger.updated_at,
)


async def create_schedule(
    *,
    trigger_key: str,
    cron: str,
    timezone: str = "UTC",
    payload: dict[str, Any] | None = None,
    enabled: bool = True,
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE,
    overlap: OverlapPolicy = OverlapPolicy.ALLOW,
) -> ScheduleView:
    now = dt.datetime.now(dt.UTC)
    schedule = validate_schedule(cron, timezone, now=now)
    await ensure_schedule_source(trigger_key)
    row = ScheduleTrigger(
        id=uuid.uuid4(),
        trigger_key=trigger_key,
        cron=cron,
        timezone=timezone,
        payload=msgspec.json.encode(payload or {}).decode(),
        enabled=enabled,
        misfire_policy=misfire_policy.value,
        overlap=overlap.value,
        next_fire_at=next_fire_time(schedule, now) if enabled else None,
        created_at=now,
        updated_at=now,
    )
    async with transaction():
        await row.save()
        await _notify(row.id)
    return await get_schedule(row.id)


async def get_schedule(schedule_id: uuid.UUID) -> ScheduleView:
    schedule = await find_schedule(schedule_id)
    if schedule is None:
        raise NotFoundError(f"schedule {schedule_id} not found")
    return schedule


async def find_schedule(schedule_id: uuid.UUID) -> ScheduleView | None:
    row = await (
        ScheduleTrigger.select(*_COLUMNS)
        .where(ScheduleTrigger.id == schedule_id)
        .output(load_json=True)
        .first()
        .run()
    )
    return None if row is None else msgspec.convert(row, ScheduleView)


async def update_schedule(schedule_id: uuid.UUID, changes: dict[str, Any]) -> ScheduleView:
    """Apply `changes` (any of the fields of a new schedule); re-plan when the timing changed."""
    now = dt.datetime.now(dt.UTC)
    if "trigger_key" in changes:
        await ensure_schedule_source(changes["trigger_key"])
    async with transaction():
        row = await (
            ScheduleTrigger.select(*_COLUMNS)
            .where(ScheduleTrigger.id == schedule_id)
            .lock_rows("UPDATE")
            .output(load_json=True)
            .first()
            .run()
        )
        if row is None:
            raise NotFoundError(f"schedule {schedule_id} not found")
        current = msgspec.convert(row, ScheduleView)
        merged = msgspec.structs.replace(current, **changes)
        schedule = validate_schedule(merged.cron, merged.timezone, now=now)
        values: dict[Any, Any] = {
            getattr(ScheduleTrigger, name): _stored(value) for name, value in changes.items()
        }
        if any(getattr(current, name) != getattr(merged, name) for name in REPLANNING_FIELDS):
            planned = next_fire_time(schedule, now) if merged.enabled else None
            values[ScheduleTrigger.next_fire_at] = planned
        values[ScheduleTrigger.updated_at] = now
        await ScheduleTrigger.update(values).where(ScheduleTrigger.id == schedule_id).run()
        await _notify(schedule_id)
    return await get_schedule(schedule_id)


async def delete_schedule(schedule_id: uuid.UUID) -> None:
    """Delete a schedule; its trigger source and past events stay."""
    async with transaction():
        deleted = await (
            ScheduleTrigger.delete()
            .where(ScheduleTrigger.id == schedule_id)
            .returning(ScheduleTrigger.id)
            .run()
        )
        if not deleted:
            raise NotFoundError(f"schedule {schedule_id} not found")
        await _notify(schedule_id)


async def list_schedules(
    *,
    limit: int,
    after: tuple[dt.datetime, uuid.UUID] | None = None,
    trigger_key: str | None = None,
    enabled: bool | None = None,
) -> list[ScheduleView]:
    """Schedules oldest first, `limit` of them, strictly after the `(created_at, id)` key."""
    table = ScheduleTrigger
    query = table.select(*_COLUMNS)
    if after is not None:
        query = query.where(after_position(table, after))
    if trigger_key is not None:
        query = query.where(table.trigger_key == trigger_key)
    if enabled is not None:
        query = query.where(table.enabled == enabled)
    rows = (
        await query.order_by(table.created_at, table.id).limit(limit).output(load_json=True).run()
    )
    return [msgspec.convert(row, ScheduleView) for row in rows]


async def enabled_schedules() -> list[ScheduleView]:
    """Every enabled schedule, for a scheduler's full resync.

    A row the API could not have written (edited by hand: an unknown misfire policy, a payload
    that is not an object) is logged and left out, so one bad row never stops the others.
    """
    rows = await (
        ScheduleTrigger.select(*_COLUMNS)
        .where(ScheduleTrigger.enabled == True)  # noqa: E712 - a SQL comparison
        .order_by(ScheduleTrigger.id)
        .output(load_json=True)
        .run()
    )
    views: list[ScheduleView] = []
    for row in rows:
        try:
            views.append(msgspec.convert(row, ScheduleView))
        except msgspec.ValidationError as error:
            log.error("schedule_row_invalid", schedule_id=str(row["id"]), error=str(error))
    return views


async def ensure_schedule_source(trigger_key: str) -> None:
    """Register `trigger_key` as a `schedule` source unless it is one already."""
    kind = await trigger_type_of(trigger_key)
    if kind is None:
        try:
            await register_trigger(
                trigger_key=trigger_key,
                type=TRIGGER_TYPE,
                description="cron schedule",
                config={},
            )
        except ConflictError:  # registered by a concurrent request meanwhile
            kind = await trigger_type_of(trigger_key)
        else:
            kind = TRIGGER_TYPE
    if kind != TRIGGER_TYPE:
        raise ConflictError(
            f"trigger {trigger_key!r} is registered as a {kind!r} source, not a schedule; "
            "choose another trigger_key"
        )


def _stored(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):
        return msgspec.json.encode(value).decode()
    return value


async def _notify(schedule_id: uuid.UUID) -> None:
    await ScheduleTrigger.raw("SELECT pg_notify({}, {})", SCHEDULE_CHANNEL, str(schedule_id)).run()
