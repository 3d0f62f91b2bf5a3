"""`/api/v1/tasks`: the tasks workflows create, for people to list, read and work on."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, patch
from litestar.params import FromPath, FromQuery, JSONBody

from server.api.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    page,
    time_and_id,
)
from server.db import tasks
from server.db.tasks import Assignee, Task, TaskStatus, Title

DueDate = Annotated[dt.datetime, msgspec.Meta(tz=True)]


class TaskChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; omitted ones stay as they are, a null assignee or due_date clears it."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    status: TaskStatus | msgspec.UnsetType = msgspec.UNSET
    assignee: Assignee | msgspec.UnsetType | None = msgspec.UNSET
    due_date: DueDate | msgspec.UnsetType | None = msgspec.UNSET


class TaskController(Controller):
    path = "/tasks"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("tasks",)

    @get("/")
    async def list_tasks(
        self,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        execution_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[TaskStatus | None] = None,
    ) -> Page[Task]:
        """Tasks, newest first; filter by the execution that made them or by status."""
        items = await tasks.list_tasks(
            limit=limit + 1, before=time_and_id(cursor), execution_id=execution_id, status=status
        )
        return page(items, limit, lambda item: (item.created_at, item.id))

    @get("/{task_id:uuid}")
    async def get_task(self, task_id: FromPath[uuid.UUID]) -> Task:
        return await tasks.get_task(task_id)

    @patch("/{task_id:uuid}", opt={"role": "operator", "audit": "task.update"})
    async def update_task(self, task_id: FromPath[uuid.UUID], data: JSONBody[TaskChange]) -> Task:
        """Change a task's status, assignee, title, description or due date."""
        changes: dict[str, Any] = {
            name: value
            for name in data.__struct_fields__
            if (value := getattr(data, name)) is not msgspec.UNSET
        }
        return await tasks.update_task(task_id, changes)
