"""Keyset pages are index conditions: a page deep in a list costs what the first one does."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine

from server.db.keyset import after_position, before_position
from server.db.tables import WorkflowDefinition


@pytest.mark.parametrize("position", [after_position, before_position])
async def test_a_keyset_position_is_an_index_condition_not_a_filter(
    connection: asyncpg.Connection, engine: PostgresEngine, position: object
) -> None:
    await connection.execute(
        "INSERT INTO workflow_definition (id, name, created_at, updated_at)"
        " SELECT gen_random_uuid(), 'w' || n, now() - n * interval '1 second', now()"
        " FROM generate_series(1, 5000) n"
    )
    await connection.execute("ANALYZE workflow_definition")
    cursor = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2500), uuid.uuid4())
    query = (
        WorkflowDefinition.select(WorkflowDefinition.id)
        .where(position(WorkflowDefinition, cursor))  # type: ignore[operator]
        .order_by(WorkflowDefinition.created_at)
        .order_by(WorkflowDefinition.id)
        .limit(20)
    )
    plan = "\n".join(row[0] for row in await connection.fetch(f"EXPLAIN {query}"))
    assert "Index Cond: (ROW(created_at, id)" in plan, plan
    assert "Filter" not in plan, plan
