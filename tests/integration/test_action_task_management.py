"""The `task_management` action on a real PostgreSQL, inside a transaction the test holds."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest

from server.actions import task_management
from server.queue.jobs import PermanentError
from tests.support.action_contexts import RunningStep, action_context, insert_running_step


@pytest.fixture
async def running_step(connection: asyncpg.Connection) -> RunningStep:
    return await insert_running_step(connection)


async def run_in_transaction(
    connection: asyncpg.Connection, step: RunningStep, cfg: dict[str, Any], **options: Any
) -> dict[str, Any]:
    """Run the action the way the worker does: inside the step's completion transaction."""
    context = action_context(
        cfg,
        execution_id=step.execution_id,
        step_id=step.step_id,
        connection=connection,
        **options,
    )
    async with connection.transaction():
        return await task_management.run(context)


async def task_count(connection: asyncpg.Connection) -> int:
    count: int = await connection.fetchval("SELECT count(*) FROM tasks")
    return count


async def test_create_links_the_task_to_its_execution_and_step(
    connection: asyncpg.Connection, running_step: RunningStep
) -> None:
    task = await run_in_transaction(
        connection,
        running_step,
        {
            "operation": "create",
            "title": "Call Ann",
            "description": "about the lead",
            "assignee": "sales@example.com",
            "due_date": "2030-01-02T09:30:00+01:00",
        },
    )
    assert task["title"] == "Call Ann"
    assert task["status"] == "open"
    assert task["assignee"] == "sales@example.com"
    assert task["due_date"] == "2030-01-02T08:30:00Z"
    assert task["execution_id"] == str(running_step.execution_id)
    assert task["step_execution_id"] == str(running_step.step_execution_id)
    uuid.UUID(task["id"])


async def test_create_twice_with_one_idempotency_key_makes_one_task(
    connection: asyncpg.Connection, running_step: RunningStep
) -> None:
    cfg = {"operation": "create", "title": "Call Ann"}
    first = await run_in_transaction(connection, running_step, cfg, attempt=1)
    again = await run_in_transaction(
        connection, running_step, {**cfg, "title": "Call Ann (retried)"}, attempt=2
    )
    assert again == first  # the first attempt's task, unchanged
    assert await task_count(connection) == 1


async def test_a_rolled_back_step_leaves_no_task(
    connection: asyncpg.Connection, running_step: RunningStep
) -> None:
    context = action_context(
        {"operation": "create", "title": "Call Ann"},
        execution_id=running_step.execution_id,
        step_id=running_step.step_id,
        connection=connection,
    )
    transaction = connection.transaction()
    await transaction.start()
    await task_management.run(context)
    await transaction.rollback()
    assert await task_count(connection) == 0
    created = await run_in_transaction(
        connection, running_step, {"operation": "create", "title": "Call Ann"}
    )
    assert await task_count(connection) == 1
    assert created["title"] == "Call Ann"


async def test_update_changes_only_the_given_fields_and_clears_empty_ones(
    connection: asyncpg.Connection, running_step: RunningStep
) -> None:
    created = await run_in_transaction(
        connection,
        running_step,
        {"operation": "create", "title": "Call Ann", "assignee": "bob", "due_date": "2030-01-02"},
    )
    assert created["due_date"] == "2030-01-02T00:00:00Z"
    updated = await run_in_transaction(
        connection,
        running_step,
        {"operation": "update", "task_id": created["id"], "status": "in_progress", "assignee": ""},
        idempotency_key="another-step",
    )
    assert (updated["id"], updated["title"], updated["status"]) == (
        created["id"],
        "Call Ann",
        "in_progress",
    )
    assert updated["assignee"] is None
    assert updated["due_date"] == created["due_date"]
    assert dt.datetime.fromisoformat(updated["updated_at"]) >= dt.datetime.fromisoformat(
        created["updated_at"]
    )


async def test_complete_marks_the_task_done(
    connection: asyncpg.Connection, running_step: RunningStep
) -> None:
    created = await run_in_transaction(
        connection, running_step, {"operation": "create", "title": "Call Ann"}
    )
    done = await run_in_transaction(
        connection,
        running_step,
        {"operation": "complete", "task_id": created["id"], "description": "called"},
        idempotency_key="complete-step",
    )
    assert (done["status"], done["description"]) == ("done", "called")
    stored = await connection.fetchval("SELECT status FROM tasks WHERE id = $1", created["id"])
    assert stored == "done"


@pytest.mark.parametrize(
    ("cfg", "named"),
    [
        ({"operation": "update", "task_id": "not-a-uuid"}, "$.task_id"),
        ({"operation": "complete"}, "`task_id`"),
        ({"operation": "create"}, "`title`"),
        ({"operation": "create", "title": "x", "due_date": "next week"}, "due_date"),
        ({"operation": "create", "title": "x", "assignee": "a" * 201}, "$.assignee"),
        ({"operation": "create", "title": "x", "status": "someday"}, "$.status"),
        ({"operation": "archive"}, "$.operation"),
    ],
)
async def test_invalid_cfg_fails_permanently_naming_the_field(
    connection: asyncpg.Connection, running_step: RunningStep, cfg: dict[str, Any], named: str
) -> None:
    with pytest.raises(PermanentError, match=named.replace("$", r"\$")):
        await run_in_transaction(connection, running_step, cfg)


async def test_an_unknown_task_fails_permanently(
    connection: asyncpg.Connection, running_step: RunningStep
) -> None:
    missing = uuid.uuid4()
    with pytest.raises(PermanentError, match=f"task {missing} not found"):
        await run_in_transaction(
            connection, running_step, {"operation": "complete", "task_id": str(missing)}
        )


async def test_a_refused_value_fails_the_step_permanently_and_leaves_no_task(
    connection: asyncpg.Connection, running_step: RunningStep
) -> None:
    context = action_context(
        {"operation": "create", "title": "NUL \x00 inside"},
        execution_id=running_step.execution_id,
        step_id=running_step.step_id,
        connection=connection,
    )
    # The engine rolls back the step's transaction when a transactional action fails.
    with pytest.raises(PermanentError, match="database refused"):
        async with connection.transaction():
            await task_management.run(context)
    count = await connection.fetchval(
        "SELECT count(*) FROM tasks WHERE execution_id = $1", running_step.execution_id
    )
    assert count == 0


async def test_without_a_connection_it_refuses_to_run() -> None:
    with pytest.raises(PermanentError, match="step transaction"):
        await task_management.run(action_context({"operation": "create", "title": "x"}))
