"""The scheduler role in-process: fires start workflows, changes apply live, errors are kept."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from config.settings import Role, Settings
from server.app import create_app
from server.scheduler.listener import SCHEDULE_LISTENER_APPLICATION_NAME
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.waiting import eventually
from tests.support.workflows import import_published, wait_for

EVERY_SECOND = "* * * * * *"
WAIT_SECONDS = 10.0  # well under the 30 s resync: a change seen sooner came by notification

ON_TICK: dict[str, Any] = {
    "name": "On tick",
    "steps": [
        {
            "key": "note",
            "kind": "action",
            "action_key": "transform",
            "cfg": {"output": {"report": "{{ trigger.report }}"}},
        }
    ],
    "subscriptions": [{"trigger_key": "tick"}],
}

EVENTS_OF = """
SELECT idempotency_key, payload::text AS payload, source::text AS source, outcome
FROM trigger_event WHERE source->>'schedule_id' = $1 ORDER BY source->>'scheduled_for'
"""


@pytest.fixture
async def full_client(settings_for: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """API, worker and scheduler in one app on this test's database."""
    app = create_app(settings_for(roles=frozenset(Role), job_poll_interval_seconds=0.2))
    async with serving(app, token=API_TOKEN) as client:
        yield client


async def events_of(connection: asyncpg.Connection, schedule_id: str) -> list[dict[str, Any]]:
    rows = await connection.fetch(EVENTS_OF, schedule_id)
    return [
        {
            "key": row["idempotency_key"],
            "payload": msgspec.json.decode(row["payload"]),
            "source": msgspec.json.decode(row["source"]),
            "outcome": row["outcome"],
        }
        for row in rows
    ]


async def create(client: httpx.AsyncClient, **fields: object) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/schedules", json={"trigger_key": "tick", "cron": EVERY_SECOND, **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_fire_records_an_event_and_starts_the_subscribed_workflow(
    full_client: httpx.AsyncClient, connection: asyncpg.Connection
) -> None:
    schedule = await create(full_client, payload={"report": "daily"})  # registers "tick"
    workflow_id = await import_published(full_client, ON_TICK)

    async def executed() -> bool:
        page = await full_client.get("/api/v1/executions", params={"workflow_id": workflow_id})
        return bool(page.json()["items"])

    await eventually(executed, what="an execution started by the schedule", within=WAIT_SECONDS)
    first = (
        await full_client.get("/api/v1/executions", params={"workflow_id": workflow_id})
    ).json()
    execution = await wait_for(full_client, first["items"][-1]["id"])
    assert (execution["status"], execution["trigger_type"]) == ("SUCCESS", "schedule")
    assert execution["steps"][0]["result_data"] == {"report": "daily"}

    event = (await events_of(connection, schedule["id"]))[0]
    scheduled_for = event["source"]["scheduled_for"]
    assert event["key"] == f"schedule:{schedule['id']}:{scheduled_for}"
    tick = dt.datetime.fromisoformat(scheduled_for)
    assert (tick.utcoffset(), tick.microsecond) == (dt.timedelta(0), 0)
    assert event["payload"] == {"report": "daily"}
    assert event["source"]["catch_up"] is False

    shown = (await full_client.get(f"/api/v1/schedules/{schedule['id']}")).json()
    assert shown["last_fire_at"] is not None
    assert shown["last_error"] is None
    assert shown["next_fire_at"] > shown["last_fire_at"]
    triggers = (await full_client.get("/api/v1/registry/triggers")).json()["items"]
    health = {t["trigger_key"]: t["health"] for t in triggers}["tick"]
    assert health["accepted"] >= 1
    assert health["deduplicated"] == 0


async def test_changes_apply_without_a_restart(
    full_client: httpx.AsyncClient, connection: asyncpg.Connection
) -> None:
    first = await create(full_client, payload={"n": 1})

    async def fired(schedule_id: str, count: int = 1) -> bool:
        return len(await events_of(connection, schedule_id)) >= count

    await eventually(
        lambda: fired(first["id"]), what="the first schedule to fire", within=WAIT_SECONDS
    )
    # The scheduler is running and synced: a new schedule can only be seen by notification.
    second = await create(full_client, trigger_key="other")
    await eventually(
        lambda: fired(second["id"]), what="a new schedule to fire", within=WAIT_SECONDS
    )

    url = f"/api/v1/schedules/{second['id']}"
    assert (await full_client.patch(url, json={"payload": {"n": 2}})).status_code == 200
    changed_at = len(await events_of(connection, second["id"]))
    await eventually(
        lambda: fired(second["id"], changed_at + 1),
        what="a fire after the change",
        within=WAIT_SECONDS,
    )
    assert (await events_of(connection, second["id"]))[-1]["payload"] == {"n": 2}

    assert (await full_client.patch(url, json={"enabled": False})).status_code == 200
    stopped_at = len(await events_of(connection, second["id"]))
    others = len(await events_of(connection, first["id"]))
    await eventually(
        lambda: fired(first["id"], others + 2),
        what="two more ticks of the other schedule",
        within=WAIT_SECONDS,
    )
    assert len(await events_of(connection, second["id"])) == stopped_at


KILL_SCHEDULE_LISTENER = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = $1 AND datname = current_database()
"""
COUNT_SCHEDULE_LISTENERS = """
SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()
"""


async def test_a_change_sent_while_the_listener_was_down_applies_after_it_reconnects(
    settings_for: Callable[..., Settings], connection: asyncpg.Connection
) -> None:
    settings = settings_for(
        roles=frozenset({Role.API, Role.SCHEDULER}), job_listener_reconnect_seconds=2.0
    )

    async def listening() -> bool:
        count = await connection.fetchval(
            COUNT_SCHEDULE_LISTENERS, SCHEDULE_LISTENER_APPLICATION_NAME
        )
        return bool(count)

    async with serving(create_app(settings), token=API_TOKEN) as client:
        await eventually(listening, what="the schedule listener to connect", within=WAIT_SECONDS)
        assert await connection.fetchval(KILL_SCHEDULE_LISTENER, SCHEDULE_LISTENER_APPLICATION_NAME)
        await eventually(
            listening,
            until=lambda found: not found,
            what="the listener to be gone",
            within=WAIT_SECONDS,
        )
        schedule = await create(client)  # its notification is lost: nobody listens
        await eventually(
            lambda: _has_events(connection, schedule["id"]),
            what="the resync after reconnecting",
            within=WAIT_SECONDS,
        )


async def _has_events(connection: asyncpg.Connection, schedule_id: str) -> bool:
    return bool(await events_of(connection, schedule_id))
