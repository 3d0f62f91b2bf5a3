"""Database-change triggers: committed row changes start workflows; rolled-back ones do not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.waiting import eventually
from tests.support.workflows import import_published, wait_for

LEADS_SOURCE = {
    "trigger_key": "lead_sources_db_change",
    "type": "database",
    "config": {
        "table": "lead_sources",
        "operations": ["INSERT", "UPDATE", "DELETE"],
        "columns": ["status"],
    },
}
ON_LEAD: dict[str, Any] = {
    "name": "On lead change",
    "steps": [
        {
            "key": "seen",
            "kind": "action",
            "action_key": "transform",
            "cfg": {"output": {"op": "{{ trigger.operation }}"}},
        }
    ],
    "subscriptions": [{"trigger_key": "lead_sources_db_change"}],
}


@pytest.fixture
async def client(
    settings_for: Callable[..., Settings], database_dsn: str
) -> AsyncIterator[httpx.AsyncClient]:
    connection = await asyncpg.connect(database_dsn)
    await connection.execute(
        "CREATE TABLE lead_sources (id serial PRIMARY KEY, name text, status text)"
    )
    await connection.close()
    settings = settings_for(
        roles=frozenset({Role.API, Role.WORKER}),
        job_poll_interval_seconds=0.2,
        database_trigger_tables=("lead_sources", "public.not_there"),
    )
    async with serving(create_app(settings), token=API_TOKEN) as api:
        yield api


async def _executions(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """The executions, finished, once there are at least `count` of them."""

    async def listed() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await client.get("/api/v1/executions")).json()["items"]
        return items

    items = await eventually(
        listed, until=lambda items: len(items) >= count, what=f"{count} executions", within=15
    )
    return [await wait_for(client, item["id"]) for item in items]


async def test_row_changes_start_the_subscribed_workflow(
    client: httpx.AsyncClient, database_dsn: str
) -> None:
    assert (await client.post("/api/v1/registry/triggers", json=LEADS_SOURCE)).status_code == 201
    await import_published(client, ON_LEAD)
    connection = await asyncpg.connect(database_dsn)
    try:
        await connection.execute("INSERT INTO lead_sources (name, status) VALUES ('Ann', 'new')")
        async with connection.transaction():
            await connection.execute(
                "UPDATE lead_sources SET name = 'Anne'"
            )  # not a watched column
        try:
            async with connection.transaction():
                await connection.execute("INSERT INTO lead_sources (name) VALUES ('ghost')")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        await connection.execute("UPDATE lead_sources SET status = 'hot'")
        await connection.execute("DELETE FROM lead_sources")
        events = await connection.fetch("SELECT payload FROM trigger_event ORDER BY received_at")
    finally:
        await connection.close()
    assert len(events) == 3
    executions = await _executions(client, 3)
    operations = sorted(e["steps"][0]["result_data"]["op"] for e in executions)
    assert operations == ["DELETE", "INSERT", "UPDATE"]
    insert = next(e for e in executions if e["context_data"]["trigger"]["operation"] == "INSERT")
    trigger = insert["context_data"]["trigger"]
    assert trigger["table"] == "public.lead_sources"
    assert (trigger["old"], trigger["new"]["name"]) == (None, "Ann")
    assert all(e["status"] == "SUCCESS" and e["trigger_type"] == "database" for e in executions)


async def test_deleting_the_source_removes_the_trigger(
    client: httpx.AsyncClient, database_dsn: str
) -> None:
    assert (await client.post("/api/v1/registry/triggers", json=LEADS_SOURCE)).status_code == 201
    assert (
        await client.delete("/api/v1/registry/triggers/lead_sources_db_change")
    ).status_code == 204
    connection = await asyncpg.connect(database_dsn)
    try:
        await connection.execute("INSERT INTO lead_sources (name, status) VALUES ('Ann', 'new')")
        assert await connection.fetchval("SELECT count(*) FROM trigger_event") == 0
        triggers = await connection.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'lead_sources'::regclass AND NOT tgisinternal"
        )
        assert triggers == 0
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"table": "customers"}, "not in DATABASE_TRIGGER_TABLES"),
        ({"table": "not_there"}, "does not exist"),
        ({"table": "job"}, "Switchyard's own tables"),
        ({"table": "lead_sources", "operations": ["TRUNCATE"]}, "config"),
        ({"table": "bad name"}, "config"),
    ],
)
async def test_refused_sources_answer_422_and_install_nothing(
    client: httpx.AsyncClient, config: dict[str, Any], message: str
) -> None:
    response = await client.post(
        "/api/v1/registry/triggers", json={"trigger_key": "x", "type": "database", "config": config}
    )
    assert response.status_code == 422, response.text
    assert message in str(response.json())
    keys = [
        t["trigger_key"] for t in (await client.get("/api/v1/registry/triggers")).json()["items"]
    ]
    assert "x" not in keys
