"""Workflow definitions (table `workflow_definition`): create, read, change, delete, list."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, Final

import msgspec
from piccolo.columns.combination import WhereRaw

from server.db.keyset import after_position
from server.db.pool import transaction
from server.db.tables import WorkflowDefinition
from server.errors import NotFoundError, PreconditionFailedError


class WorkflowSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    description: str
    category: str
    tags: list[str]
    is_active: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def etag(self) -> str:
        """A weak validator that changes with every update of the definition."""
        return f'W/"{int(self.updated_at.timestamp() * 1_000_000):x}"'


_COLUMNS = (
    WorkflowDefinition.id,
    WorkflowDefinition.name,
    WorkflowDefinition.description,
    WorkflowDefinition.category,
    WorkflowDefinition.tags,
    WorkflowDefinition.is_active,
    WorkflowDefinition.created_at,
    WorkflowDefinition.updated_at,
)


async def create_workflow(
    *,
    name: str,
    description: str = "",
    category: str = "",
    tags: list[str] | None = None,
    is_active: bool = True,
    workflow_id: uuid.UUID | None = None,
) -> WorkflowSummary:
    row = WorkflowDefinition(
        id=workflow_id or uuid.uuid4(),
        name=name,
        description=description,
        category=category,
        tags=json.dumps(tags or []),
        is_active=is_active,
    )
    await row.save()
    return await get_workflow(row.id)


async def get_workflow(workflow_id: uuid.UUID) -> WorkflowSummary:
    row = await (
        WorkflowDefinition.select(*_COLUMNS)
        .where(WorkflowDefinition.id == workflow_id)
        .output(load_json=True)
        .first()
        .run()
    )
    if row is None:
        raise NotFoundError(f"workflow {workflow_id} not found")
    return msgspec.convert(row, WorkflowSummary)


async def update_workflow(
    workflow_id: uuid.UUID, changes: dict[str, Any], *, if_match: str | None = None
) -> WorkflowSummary:
    """Apply `changes` (a subset of name, description, category, tags, is_active).

    With `if_match` (an ETag from a previous read), the update happens only if nobody changed
    the definition since; otherwise a ConflictError says to re-read it.
    """
    async with transaction():
        current = await _locked_workflow(workflow_id)
        if if_match is not None and if_match != current.etag:
            raise PreconditionFailedError(
                f"workflow {workflow_id} changed since it was read (ETag {current.etag}); "
                "GET it again and re-apply the change"
            )
        values: dict[Any, Any] = {
            getattr(WorkflowDefinition, key): json.dumps(value) if key == "tags" else value
            for key, value in changes.items()
        }
        values[WorkflowDefinition.updated_at] = dt.datetime.now(dt.UTC)
        await WorkflowDefinition.update(values).where(WorkflowDefinition.id == workflow_id).run()
    return await get_workflow(workflow_id)


async def _locked_workflow(workflow_id: uuid.UUID) -> WorkflowSummary:
    row = await (
        WorkflowDefinition.select(*_COLUMNS)
        .where(WorkflowDefinition.id == workflow_id)
        .lock_rows("UPDATE")
        .output(load_json=True)
        .first()
        .run()
    )
    if row is None:
        raise NotFoundError(f"workflow {workflow_id} not found")
    return msgspec.convert(row, WorkflowSummary)


# The events whose executions a workflow's deletion takes with it keep the reason, so an
# accepted event left without executions still says why (`switchyard check` holds it to that).
NOTE_EVENTS_OF_DELETED_WORKFLOW: Final = """
UPDATE trigger_event SET outcome_detail = left(
    coalesce(outcome_detail || '; ', '') || format('executions deleted with workflow %s', $1::uuid),
    2000)
WHERE id IN (SELECT trigger_event_id FROM workflow_execution
             WHERE workflow_id = $1 AND trigger_event_id IS NOT NULL)
"""

CANCEL_CHILDREN_OF_DELETED_WORKFLOW: Final = """
UPDATE workflow_execution
SET status = 'CANCELLED', held = false, finished_at = now(), updated_at = now(),
    error = 'deleted with its workflow'
WHERE workflow_id = $1 AND parent_execution_id IS NOT NULL
  AND status IN ('PENDING', 'RUNNING', 'WAITING')
"""


async def delete_workflow(workflow_id: uuid.UUID) -> None:
    """Delete a definition with its versions, variables, subscriptions and executions; the
    events that started those executions record that they were deleted."""
    async with transaction() as tx:
        await tx.connection.execute(NOTE_EVENTS_OF_DELETED_WORKFLOW, workflow_id)
        # Its unfinished child executions end first (CANCELLED), so the parents waiting for
        # them are told (`execution_ended` jobs carry the parent) instead of waiting forever.
        await tx.connection.execute(CANCEL_CHILDREN_OF_DELETED_WORKFLOW, workflow_id)
        deleted = await (
            WorkflowDefinition.delete()
            .where(WorkflowDefinition.id == workflow_id)
            .returning(WorkflowDefinition.id)
            .run()
        )
        if not deleted:
            raise NotFoundError(f"workflow {workflow_id} not found")


async def list_workflows(
    *,
    limit: int,
    after: tuple[dt.datetime, uuid.UUID] | None,
    category: str | None = None,
    tag: str | None = None,
    is_active: bool | None = None,
) -> list[WorkflowSummary]:
    """Definitions oldest first, `limit` of them, strictly after the `(created_at, id)` key."""
    table = WorkflowDefinition
    query = table.select(*_COLUMNS)
    if after is not None:
        query = query.where(after_position(table, after))
    if category is not None:
        query = query.where(table.category == category)
    if is_active is not None:
        query = query.where(table.is_active == is_active)
    if tag is not None:
        query = query.where(WhereRaw("tags @> {}::jsonb", json.dumps([tag])))
    rows = (
        await query.order_by(table.created_at, table.id).limit(limit).output(load_json=True).run()
    )
    return [msgspec.convert(row, WorkflowSummary) for row in rows]
