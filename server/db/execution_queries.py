"""Reading executions for the API: filtered keyset lists, and one execution with its steps."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
from piccolo.query.functions.aggregate import Count

from server.db.keyset import before_position
from server.db.tables import StepExecution, WorkflowExecution
from server.errors import NotFoundError


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a step, as the worker recorded it."""

    attempt: int
    status: str
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime
    duration_ms: float | None


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    step_id: uuid.UUID
    step_key: str
    status: str
    input_data: Any
    result_data: Any
    error: str | None
    attempts: int
    duration_ms: float | None
    """How long the last attempt ran, in milliseconds."""
    attempts_history: list[Attempt]
    """Every attempt, oldest first, the last one included (a step run again by a retry of
    its execution keeps its earlier attempts)."""
    branches: list[str]
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class ExecutionView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    status: str
    trigger_type: str
    trigger_event_id: uuid.UUID | None
    context_data: dict[str, Any]
    error: str | None
    steps_run: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    parent_execution_id: uuid.UUID | None
    """The execution whose `call_workflow` or `foreach` step started this one."""
    parent_step_key: str | None
    item_index: int | None
    """A foreach child's item (0-based), in the parent's `items`."""
    held: bool
    """PENDING and not started yet: over its foreach's `max_concurrency`, or over its
    workflow's concurrency limit; it starts in order when there is room."""


class ChildrenSummary(msgspec.Struct, frozen=True, kw_only=True):
    """An execution's child executions by status; list them with
    `GET /api/v1/executions?parent_id=`."""

    total: int
    by_status: dict[str, int]


class ExecutionDetail(ExecutionView, frozen=True, kw_only=True):
    steps: list[StepView]
    children: ChildrenSummary


_EXECUTION = WorkflowExecution
_COLUMNS = (
    _EXECUTION.id, _EXECUTION.workflow_id, _EXECUTION.version_id, _EXECUTION.status,
    _EXECUTION.trigger_type, _EXECUTION.trigger_event_id, _EXECUTION.context_data,
    _EXECUTION.error, _EXECUTION.steps_run, _EXECUTION.created_at, _EXECUTION.started_at,
    _EXECUTION.finished_at, _EXECUTION.parent_execution_id, _EXECUTION.parent_step_key,
    _EXECUTION.item_index, _EXECUTION.held,
)  # fmt: skip


async def list_executions(
    *,
    limit: int,
    before: tuple[dt.datetime, uuid.UUID] | None,
    workflow_id: uuid.UUID | None = None,
    status: str | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
    parent_id: uuid.UUID | None = None,
    trigger_type: str | None = None,
) -> list[ExecutionView]:
    """Newest first, strictly before the `(created_at, id)` keyset position."""
    query = _EXECUTION.select(*_COLUMNS)
    if trigger_type is not None:
        query = query.where(_EXECUTION.trigger_type == trigger_type)
    if parent_id is not None:
        query = query.where(_EXECUTION.parent_execution_id == parent_id)
    if before is not None:
        query = query.where(before_position(_EXECUTION, before))
    if workflow_id is not None:
        query = query.where(_EXECUTION.workflow_id == workflow_id)
    if status is not None:
        query = query.where(_EXECUTION.status == status)
    if created_after is not None:
        query = query.where(_EXECUTION.created_at >= created_after)
    if created_before is not None:
        query = query.where(_EXECUTION.created_at < created_before)
    rows = await (
        query.order_by(_EXECUTION.created_at, ascending=False)
        .order_by(_EXECUTION.id, ascending=False)
        .limit(limit)
        .output(load_json=True)
        .run()
    )
    return [msgspec.convert(row, ExecutionView) for row in rows]


async def get_execution_detail(execution_id: uuid.UUID) -> ExecutionDetail:
    row = await (
        _EXECUTION.select(*_COLUMNS)
        .where(_EXECUTION.id == execution_id)
        .output(load_json=True)
        .first()
        .run()
    )
    if row is None:
        raise NotFoundError(f"execution {execution_id} not found")
    steps = await (
        StepExecution.select(
            StepExecution.id,
            StepExecution.step_id,
            StepExecution.step_key,
            StepExecution.status,
            StepExecution.input_data,
            StepExecution.result_data,
            StepExecution.error,
            StepExecution.attempts,
            StepExecution.execution_time.as_alias("duration_ms"),
            StepExecution.attempts_history,
            StepExecution.branches,
            StepExecution.created_at,
            StepExecution.started_at,
            StepExecution.finished_at,
        )
        .where(StepExecution.execution_id == execution_id)
        .order_by(StepExecution.created_at)
        .order_by(StepExecution.id)
        .output(load_json=True)
        .run()
    )
    for step in steps:
        step["attempts_history"] = attempts_history(step)
    counts = await (
        _EXECUTION.select(_EXECUTION.status, Count(_EXECUTION.id, alias="count"))
        .where(_EXECUTION.parent_execution_id == execution_id)
        .group_by(_EXECUTION.status)
        .run()
    )
    children = {
        "total": sum(count["count"] for count in counts),
        "by_status": {count["status"]: count["count"] for count in counts},
    }
    return msgspec.convert({**row, "steps": steps, "children": children}, ExecutionDetail)


FINISHED_STEP = frozenset({"SUCCESS", "FAILED"})


def attempts_history(step: dict[str, Any]) -> list[dict[str, Any]]:
    """Every attempt of a step: the retried ones stored in `attempts_history`, then its last
    attempt, which is the step row itself (its start is its end less its duration)."""
    history: list[dict[str, Any]] = list(step["attempts_history"] or [])
    finished, duration = step["finished_at"], step["duration_ms"]
    if step["status"] in FINISHED_STEP and finished is not None and step["attempts"] > 0:
        started = None if duration is None else finished - dt.timedelta(milliseconds=duration)
        history.append(
            {
                "attempt": step["attempts"],
                "status": step["status"],
                "error": step["error"],
                "started_at": started,
                "finished_at": finished,
                "duration_ms": duration,
            }
        )
    return history
