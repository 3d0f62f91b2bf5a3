"""Tasks (table `tasks`): the work items workflows create, read and changed through the API.

The `task_management` action writes tasks itself, inside its step's transaction (its SQL lives in
`server.actions.task_management`); this repository serves the REST side: one task, a filtered
list newest first by keyset on `(created_at, id)`, and a partial update. `Task` is the shape
both sides hand out.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Any, Final

import msgspec

from server.db.keyset import before_position
from server.db.tables import Tasks
from server.errors import NotFoundError

TITLE_MAX_CHARS: Final = 500
ASSIGNEE_MAX_CHARS: Final = 200

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=TITLE_MAX_CHARS)]
Assignee = Annotated[str, msgspec.Meta(max_length=ASSIGNEE_MAX_CHARS)]


class TaskStatus(StrEnum):
    """The stored `tasks.status` values."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class Task(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    title: str
    description: str
    status: TaskStatus
    assignee: str | None
    due_date: dt.datetime | None
    execution_id: uuid.UUID | None
    step_execution_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


_COLUMNS = (
    Tasks.id,
    Tasks.title,
    Tasks.description,
    Tasks.status,
    Tasks.assignee,
    Tasks.due_date,
    Tasks.execution_id,
    Tasks.step_execution_id,
    Tasks.created_at,
    Tasks.updated_at,
)


async def get_task(task_id: uuid.UUID) -> Task:
    row = await Tasks.select(*_COLUMNS).where(Tasks.id == task_id).first().run()
    if row is None:
        raise NotFoundError(f"task {task_id} not found")
    return msgspec.convert(row, Task)


async def list_tasks(
    *,
    limit: int,
    before: tuple[dt.datetime, uuid.UUID] | None,
    execution_id: uuid.UUID | None = None,
    status: TaskStatus | None = None,
) -> list[Task]:
    """Tasks newest first, `limit` of them, strictly before the `(created_at, id)` key."""
    query = Tasks.select(*_COLUMNS)
    if before is not None:
        query = query.where(before_position(Tasks, before))
    if execution_id is not None:
        query = query.where(Tasks.execution_id == execution_id)
    if status is not None:
        query = query.where(Tasks.status == status.value)
    rows = await query.order_by(Tasks.created_at, Tasks.id, ascending=False).limit(limit).run()
    return [msgspec.convert(row, Task) for row in rows]


async def update_task(task_id: uuid.UUID, changes: dict[str, Any]) -> Task:
    """Apply `changes` (a subset of title, description, status, assignee, due_date)."""
    if not changes:
        return await get_task(task_id)
    values: dict[Any, Any] = {getattr(Tasks, name): value for name, value in changes.items()}
    values[Tasks.updated_at] = dt.datetime.now(dt.UTC)
    rows = await Tasks.update(values).where(Tasks.id == task_id).returning(*_COLUMNS).run()
    if not rows:
        raise NotFoundError(f"task {task_id} not found")
    return msgspec.convert(rows[0], Task)
