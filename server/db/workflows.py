"""Workflow definitions (table `workflow_definition`)."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from server.db.tables import WorkflowDefinition


class WorkflowSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    description: str
    category: str
    tags: list[str]
    is_active: bool
    created_at: dt.datetime
    updated_at: dt.datetime


async def list_workflows(
    *, limit: int, after: tuple[dt.datetime, uuid.UUID] | None
) -> list[WorkflowSummary]:
    """Definitions oldest first, `limit` of them, strictly after the `(created_at, id)` key."""
    table = WorkflowDefinition
    query = table.select(
        table.id, table.name, table.description, table.category, table.tags,
        table.is_active, table.created_at, table.updated_at,
    )  # fmt: skip
    if after is not None:
        created_at, last_id = after
        query = query.where(
            (table.created_at > created_at)
            | ((table.created_at == created_at) & (table.id > last_id))
        )
    rows = (
        await query.order_by(table.created_at, table.id).limit(limit).output(load_json=True).run()
    )
    return [msgspec.convert(row, WorkflowSummary) for row in rows]
