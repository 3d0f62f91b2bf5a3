"""The `task_management` action: create, update or complete a row in `tasks`, transactionally.

It runs inside the step's completion transaction, on the connection the worker passes, so the
task and the step result commit together or not at all. A created task carries the step's
idempotency key (unique in `tasks`): a retried or rescued step finds the row an earlier attempt
committed and returns it, never a second one. `update` and `complete` (status `done`) change
only the fields the cfg gives; an empty `assignee` or `due_date` clears it. A value PostgreSQL
refuses fails this step permanently (the same value will be refused again); the runtime then
rolls the step's transaction back (see `server.actions.base`). The output is the task.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Final, Literal

import asyncpg
import msgspec

from server.actions.base import ActionContext, Output
from server.actions.inputs import typed_input
from server.db.tasks import Assignee, Task, TaskStatus, Title
from server.queue.client import Connection
from server.queue.jobs import PermanentError

# Insert the step's task, or return the one this step's earlier attempt committed. The unique
# idempotency_key turns a second insert into the conflict branch; DO UPDATE rather than
# DO NOTHING so that RETURNING yields the existing row in the same statement, also when a
# concurrent attempt inserted it first (the statement waits for that transaction, then sees its
# row). The assignment is a no-op that keeps the first attempt's values and locks the row until
# this transaction ends. The step execution is looked up by its unique (execution_id, step_id);
# NULL when the runtime has not written that row yet.
CREATE_TASK: Final = """
INSERT INTO tasks (id, title, description, status, assignee, due_date, execution_id,
                   step_execution_id, idempotency_key)
VALUES ($1, $2, $3, $4, $5, $6, $7,
        (SELECT id FROM step_execution WHERE execution_id = $7 AND step_id = $8), $9)
ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
RETURNING id, title, description, status, assignee, due_date, execution_id, step_execution_id,
          created_at, updated_at
"""

# Change the given fields of one task (row lock until the step's transaction ends). A NULL
# title, description or status keeps the stored value; assignee and due_date can be cleared,
# so each comes with a flag saying whether the cfg gave it.
UPDATE_TASK: Final = """
UPDATE tasks SET
    title = COALESCE($2::varchar, title),
    description = COALESCE($3::text, description),
    status = COALESCE($4::varchar, status),
    assignee = CASE WHEN $5::boolean THEN $6::varchar ELSE assignee END,
    due_date = CASE WHEN $7::boolean THEN $8::timestamptz ELSE due_date END,
    updated_at = now()
WHERE id = $1
RETURNING id, title, description, status, assignee, due_date, execution_id, step_execution_id,
          created_at, updated_at
"""


class TaskConfig(msgspec.Struct, frozen=True, kw_only=True):
    operation: Literal["create", "update", "complete"]
    task_id: uuid.UUID | None = None
    title: Title | None = None
    description: str | None = None
    status: TaskStatus | None = None
    assignee: Assignee | msgspec.UnsetType | None = msgspec.UNSET
    due_date: str | msgspec.UnsetType | None = msgspec.UNSET


async def run(context: ActionContext) -> Output:
    config = typed_input(context.cfg, TaskConfig, "task_management cfg")
    if context.connection is None:
        raise PermanentError("task_management runs inside the step transaction; no connection")
    try:
        if config.operation == "create":
            task = await create_task(context.connection, context, config)
        else:
            task = await change_task(context.connection, config)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
        raise PermanentError(f"task_management: the database refused the task: {error}") from None
    output: Output = msgspec.to_builtins(task)
    return output


async def create_task(connection: Connection, context: ActionContext, config: TaskConfig) -> Task:
    if config.title is None:
        raise PermanentError("task_management cfg: `title` is required to create a task")
    row = await connection.fetchrow(
        CREATE_TASK,
        uuid.uuid4(),
        config.title,
        config.description or "",
        (config.status or TaskStatus.OPEN).value,
        _optional(config.assignee),
        _due_date(config.due_date),
        context.execution_id,
        context.step_id,
        context.idempotency_key,
    )
    return _task(row)


async def change_task(connection: Connection, config: TaskConfig) -> Task:
    if config.task_id is None:
        raise PermanentError(f"task_management cfg: `task_id` is required to {config.operation}")
    status = TaskStatus.DONE if config.operation == "complete" else config.status
    row = await connection.fetchrow(
        UPDATE_TASK,
        config.task_id,
        config.title,
        config.description,
        None if status is None else status.value,
        config.assignee is not msgspec.UNSET,
        _optional(config.assignee),
        config.due_date is not msgspec.UNSET,
        _due_date(config.due_date),
    )
    if row is None:
        raise PermanentError(f"task {config.task_id} not found")
    return _task(row)


def _task(row: asyncpg.Record | None) -> Task:
    if row is None:  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING always returns the row
        raise RuntimeError("the task statement returned no row")
    return msgspec.convert(dict(row), Task)


def _optional(value: str | msgspec.UnsetType | None) -> str | None:
    """A cfg string that may be cleared: absent, null and "" all mean no value."""
    return value if isinstance(value, str) and value else None


def _due_date(value: str | msgspec.UnsetType | None) -> dt.datetime | None:
    """ISO 8601 date or date-time; a date or a time without zone is taken as UTC."""
    text = _optional(value)
    if text is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise PermanentError(
            f"task_management cfg: due_date {text!r} is not an ISO 8601 date or date-time"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
