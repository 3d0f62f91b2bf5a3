"""`/api/v1/schedules`: cron schedules that fire events for a trigger key.

A schedule is `{"trigger_key", "cron", "timezone", "payload", "enabled", "misfire_policy",
"overlap"}` (`overlap`: `allow`, the default, starts every fire's executions; `skip` starts no
execution of a workflow while one this schedule started is unfinished; `buffer_one` lets at
most one wait for it, then run);
reads add the scheduler's view: `last_fire_at`, `next_fire_at` (null while disabled) and
`last_error`. An invalid cron or time zone answers 422 naming the field, with an example.
Every change is committed with a notification, so running schedulers apply it at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from server.api.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    page,
    time_and_id,
)
from server.db import schedules
from server.db.schedules import ScheduleView
from server.engine.document import TriggerKey
from server.triggers.schedule import MisfirePolicy, OverlapPolicy

Cron = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        description="five fields (minute hour day month weekday), six with seconds first, "
        "or @hourly/@daily/@weekly/@monthly/@yearly",
        examples=["*/5 * * * *", "0 9 * * 1-5", "*/10 * * * * *"],
    ),
]
Timezone = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=64, description="IANA time zone", examples=["Europe/Berlin"]
    ),
]


class ScheduleCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trigger_key: TriggerKey
    cron: Cron
    timezone: Timezone = "UTC"
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    enabled: bool = True
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    overlap: OverlapPolicy = OverlapPolicy.ALLOW


class ScheduleChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; omitted ones stay as they are."""

    trigger_key: TriggerKey | msgspec.UnsetType = msgspec.UNSET
    cron: Cron | msgspec.UnsetType = msgspec.UNSET
    timezone: Timezone | msgspec.UnsetType = msgspec.UNSET
    payload: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    misfire_policy: MisfirePolicy | msgspec.UnsetType = msgspec.UNSET
    overlap: OverlapPolicy | msgspec.UnsetType = msgspec.UNSET


class ScheduleController(Controller):
    path = "/schedules"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("schedules",)

    @get("/")
    async def list_schedules(
        self,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        trigger_key: FromQuery[str | None] = None,
        enabled: FromQuery[bool | None] = None,
    ) -> Page[ScheduleView]:
        """Schedules, oldest first; filter by trigger_key or enabled."""
        items = await schedules.list_schedules(
            limit=limit + 1, after=time_and_id(cursor), trigger_key=trigger_key, enabled=enabled
        )
        return page(items, limit, lambda item: (item.created_at, item.id))

    @post("/", status_code=HTTP_201_CREATED, opt={"role": "editor", "audit": "schedule.create"})
    async def create_schedule(self, data: JSONBody[ScheduleCreate]) -> ScheduleView:
        """A schedule firing events for `trigger_key` (registered as a `schedule` source)."""
        return await schedules.create_schedule(**msgspec.structs.asdict(data))

    @get("/{schedule_id:uuid}")
    async def get_schedule(self, schedule_id: FromPath[uuid.UUID]) -> ScheduleView:
        """A schedule with its last fire, next planned fire and last error."""
        return await schedules.get_schedule(schedule_id)

    @patch("/{schedule_id:uuid}", opt={"role": "editor", "audit": "schedule.update"})
    async def update_schedule(
        self, schedule_id: FromPath[uuid.UUID], data: JSONBody[ScheduleChange]
    ) -> ScheduleView:
        """Change fields; a new cron, time zone or re-enabling plans from now (no catch-up)."""
        changes = {
            name: value
            for name in data.__struct_fields__
            if (value := getattr(data, name)) is not msgspec.UNSET
        }
        return await schedules.update_schedule(schedule_id, changes)

    @delete(
        "/{schedule_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "editor", "audit": "schedule.delete"},
    )
    async def delete_schedule(self, schedule_id: FromPath[uuid.UUID]) -> None:
        """Delete a schedule; its events stay, and so does its trigger source."""
        await schedules.delete_schedule(schedule_id)
