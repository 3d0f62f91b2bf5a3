"""`/api/v1/tasks`: list (filters, keyset pages newest first), read and change tasks."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import httpx
import pytest

from server.actions import task_management
from tests.support.action_contexts import RunningStep, action_context, insert_running_step


def parse(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp)


async def create_task(
    connection: asyncpg.Connection, step: RunningStep | None = None, **cfg: str
) -> str:
    """A task made the way workflows make them: by the action, in a step's transaction."""
    step = step or await insert_running_step(connection)
    context = action_context(
        {"operation": "create", "title": "Call", **cfg},
        execution_id=step.execution_id,
        step_id=step.step_id,
        idempotency_key=str(uuid.uuid4()),
        connection=connection,
    )
    async with connection.transaction():
        task = await task_management.run(context)
    task_id: str = task["id"]
    return task_id


async def test_a_task_is_read_by_id(
    api_client: httpx.AsyncClient, connection: asyncpg.Connection
) -> None:
    step = await insert_running_step(connection)
    task_id = await create_task(connection, step, title="Call Ann", due_date="2030-01-02")
    response = await api_client.get(f"/api/v1/tasks/{task_id}")
    assert response.status_code == 200
    task = response.json()
    assert (task["id"], task["title"], task["status"]) == (task_id, "Call Ann", "open")
    assert task["due_date"] == "2030-01-02T00:00:00Z"
    assert task["execution_id"] == str(step.execution_id)
    assert task["step_execution_id"] == str(step.step_execution_id)


async def test_an_unknown_task_is_a_404_problem(api_client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    response = await api_client.get(f"/api/v1/tasks/{missing}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert str(missing) in response.json()["detail"]


async def test_tasks_are_listed_newest_first_in_keyset_pages(
    api_client: httpx.AsyncClient, connection: asyncpg.Connection
) -> None:
    created = [await create_task(connection, title=f"task {n}") for n in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await api_client.get("/api/v1/tasks", params=params)).json()
        seen += [task["id"] for task in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


async def test_tasks_are_filtered_by_execution_and_status(
    api_client: httpx.AsyncClient, connection: asyncpg.Connection
) -> None:
    step = await insert_running_step(connection)
    mine = await create_task(connection, step)
    other = await create_task(connection, status="done")
    by_execution = await api_client.get(
        "/api/v1/tasks", params={"execution_id": str(step.execution_id)}
    )
    assert [task["id"] for task in by_execution.json()["items"]] == [mine]
    done = await api_client.get("/api/v1/tasks", params={"status": "done"})
    assert [task["id"] for task in done.json()["items"]] == [other]
    invalid = await api_client.get("/api/v1/tasks", params={"status": "someday"})
    assert invalid.status_code == 400


async def test_a_malformed_cursor_is_a_400(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/api/v1/tasks", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


async def test_patch_changes_the_given_fields_and_clears_nulls(
    api_client: httpx.AsyncClient, connection: asyncpg.Connection
) -> None:
    task_id = await create_task(connection, assignee="bob", due_date="2030-01-02")
    before = (await api_client.get(f"/api/v1/tasks/{task_id}")).json()
    response = await api_client.patch(
        f"/api/v1/tasks/{task_id}",
        json={"status": "in_progress", "assignee": None, "title": "Call Bob"},
    )
    assert response.status_code == 200
    task = response.json()
    assert (task["status"], task["assignee"], task["title"]) == ("in_progress", None, "Call Bob")
    assert task["due_date"] == before["due_date"]
    assert parse(task["updated_at"]) > parse(before["updated_at"])
    moved = await api_client.patch(
        f"/api/v1/tasks/{task_id}", json={"due_date": "2031-05-06T07:08:09+02:00"}
    )
    assert moved.json()["due_date"] == "2031-05-06T05:08:09Z"
    assert (await api_client.get(f"/api/v1/tasks/{task_id}")).json()["title"] == "Call Bob"


@pytest.mark.parametrize(
    "body",
    [
        {"status": "someday"},
        {"title": ""},
        {"due_date": "2031-05-06T07:08:09"},  # no time zone
        {"owner": "ann"},
    ],
)
async def test_patch_refuses_invalid_changes(
    api_client: httpx.AsyncClient, connection: asyncpg.Connection, body: dict[str, str]
) -> None:
    task_id = await create_task(connection)
    response = await api_client.patch(f"/api/v1/tasks/{task_id}", json=body)
    assert response.status_code == 400


async def test_patch_of_an_unknown_task_is_a_404(api_client: httpx.AsyncClient) -> None:
    response = await api_client.patch(f"/api/v1/tasks/{uuid.uuid4()}", json={"status": "done"})
    assert response.status_code == 404
