"""Workflow concurrency limits and schedule overlap end to end: events and schedule fires
through the API and the scheduler, executions run by real workers, order and overlap read
from the executions' own timestamps."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.invariants import assert_invariants
from tests.support.processes import ServerProcess
from tests.support.waiting import eventually
from tests.support.workflows import health_when, import_published

FINISHED = ("SUCCESS", "FAILED", "CANCELLED")

# Every execution of one workflow with what decides order and overlap, in arrival order.
EXECUTIONS_OF = """
SELECT e.id::text, e.status, e.held, e.concurrency_key, e.overlap_key, e.created_at,
       e.started_at, e.finished_at, e.trigger_event_id::text AS event_id
FROM workflow_execution e WHERE e.workflow_id = $1::uuid
ORDER BY e.created_at, e.id
"""


def workflow(
    name: str,
    *,
    trigger_keys: list[str],
    delay_seconds: float,
    concurrency: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A workflow of three steps, the middle one a durable delay (so executions overlap in time
    unless something keeps them apart)."""
    document: dict[str, Any] = {
        "name": name,
        "steps": [
            {
                "key": "first",
                "kind": "action",
                "action_key": "transform",
                "cfg": {"output": {"n": "{{ trigger.n }}"}},
            },
            {"key": "wait", "kind": "delay", "cfg": {"seconds": delay_seconds}},
            {
                "key": "last",
                "kind": "action",
                "action_key": "transform",
                "cfg": {"output": {"done": True}},
            },
        ],
        "edges": [{"from": "first", "to": "wait"}, {"from": "wait", "to": "last"}],
        "subscriptions": [{"trigger_key": key} for key in trigger_keys],
    }
    if concurrency is not None:
        document["concurrency"] = concurrency
    return document


async def register_event_source(client: httpx.AsyncClient, trigger_key: str) -> None:
    response = await client.post(
        "/api/v1/registry/triggers", json={"trigger_key": trigger_key, "type": "event"}
    )
    assert response.status_code == 201, response.text


async def send(client: httpx.AsyncClient, trigger_key: str, payload: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/events", json={"trigger_key": trigger_key, "payload": payload}
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def executions_of(connection: asyncpg.Connection, workflow_id: str) -> list[dict[str, Any]]:
    return [dict(row) for row in await connection.fetch(EXECUTIONS_OF, workflow_id)]


async def all_finished(
    connection: asyncpg.Connection, workflow_id: str, count: int, within: float = 60.0
) -> list[dict[str, Any]]:
    """The workflow's executions once `count` of them exist and every one has finished."""
    return await eventually(
        lambda: executions_of(connection, workflow_id),
        until=lambda rows: len(rows) >= count and all(row["status"] in FINISHED for row in rows),
        what=f"{count} finished executions of workflow {workflow_id}",
        within=within,
        every=0.2,
    )


def never_two_at_once(executions: list[dict[str, Any]]) -> None:
    """In start order, each execution started after the one before it finished (an unfinished
    one must be the last)."""
    started = sorted(
        (row for row in executions if row["started_at"] is not None),
        key=lambda row: row["started_at"],
    )
    for before, after in itertools.pairwise(started):
        assert before["finished_at"] is not None, (before, after)
        assert after["started_at"] >= before["finished_at"], (before, after)


def overlapping(first: dict[str, Any], second: dict[str, Any]) -> bool:
    return bool(
        first["started_at"] < second["finished_at"] and second["started_at"] < first["finished_at"]
    )


@pytest.mark.timeout(180)
async def test_a_limit_of_one_runs_fifty_events_one_after_another_in_arrival_order(
    api_only: httpx.AsyncClient,
    api_settings: Settings,
    start_worker: Callable[[], ServerProcess],
    connection: asyncpg.Connection,
) -> None:
    await register_event_source(api_only, "orders")
    workflow_id = await import_published(
        api_only,
        workflow("One at a time", trigger_keys=["orders"], delay_seconds=0.05,
                 concurrency={"limit": 1}),
    )  # fmt: skip
    start_worker()
    start_worker()
    sent = [(await send(api_only, "orders", {"n": n}))["execution_ids"] for n in range(50)]
    assert all(len(ids) == 1 for ids in sent)
    arrival_order = [ids[0] for ids in sent]

    executions = await all_finished(connection, workflow_id, 50, within=150.0)

    assert [row["status"] for row in executions] == ["SUCCESS"] * 50
    assert {row["concurrency_key"] for row in executions} == {""}  # no key: one group
    start_order = [row["id"] for row in sorted(executions, key=lambda row: row["started_at"])]
    assert start_order == arrival_order
    never_two_at_once(executions)
    # The limit held them: most arrived while the one before them was still running.
    in_start_order = sorted(executions, key=lambda row: row["started_at"])
    waited = sum(
        after["created_at"] < before["finished_at"]
        for before, after in itertools.pairwise(in_start_order)
    )
    assert waited >= 40
    await assert_invariants(api_settings)


async def test_a_templated_key_gives_each_customer_a_group_of_its_own(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
    connection: asyncpg.Connection,
) -> None:
    await register_event_source(engine_client, "orders")
    workflow_id = await import_published(
        engine_client,
        workflow("Per customer", trigger_keys=["orders"], delay_seconds=1,
                 concurrency={"limit": 1, "key": "{{ trigger.customer }}"}),
    )  # fmt: skip
    for n, customer in enumerate(["ann", "bob", "ann", "bob"]):
        await send(engine_client, "orders", {"n": n, "customer": customer})

    executions = await all_finished(connection, workflow_id, 4)

    assert [row["status"] for row in executions] == ["SUCCESS"] * 4
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for row in executions:
        by_customer.setdefault(row["concurrency_key"], []).append(row)
    assert sorted(by_customer) == ["ann", "bob"]
    for rows in by_customer.values():
        never_two_at_once(rows)  # one at a time per customer, in arrival order
        assert rows[0]["started_at"] < rows[1]["started_at"]
    assert overlapping(by_customer["ann"][0], by_customer["bob"][0])  # groups are independent
    await assert_invariants(engine_settings)


async def test_a_cancelled_held_execution_gives_its_turn_to_the_next(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
    connection: asyncpg.Connection,
) -> None:
    await register_event_source(engine_client, "orders")
    workflow_id = await import_published(
        engine_client,
        workflow("Queued", trigger_keys=["orders"], delay_seconds=1, concurrency={"limit": 1}),
    )
    [first], [second], [third] = [
        (await send(engine_client, "orders", {"n": n}))["execution_ids"] for n in range(3)
    ]
    waiting = (await engine_client.get(f"/api/v1/executions/{second}")).json()
    assert (waiting["status"], waiting["held"]) == ("PENDING", True)
    cancelled = await engine_client.post(f"/api/v1/executions/{second}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["held"]) == ("CANCELLED", False)

    executions = {row["id"]: row for row in await all_finished(connection, workflow_id, 3)}

    assert [executions[id_]["status"] for id_ in (first, second, third)] == [
        "SUCCESS",
        "CANCELLED",
        "SUCCESS",
    ]
    assert executions[second]["started_at"] is None  # it never ran
    assert executions[third]["started_at"] >= executions[first]["finished_at"]
    await assert_invariants(engine_settings)


async def test_overflow_skip_records_the_skipped_executions_on_their_events(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
    connection: asyncpg.Connection,
) -> None:
    for trigger_key in ("solo", "shared"):
        await register_event_source(engine_client, trigger_key)
    limited = await import_published(
        engine_client,
        workflow("Only one", trigger_keys=["solo", "shared"], delay_seconds=2,
                 concurrency={"limit": 1, "overflow": "skip"}),
    )  # fmt: skip
    audit = await import_published(
        engine_client, workflow("Audit", trigger_keys=["shared"], delay_seconds=0.01)
    )

    first = await send(engine_client, "solo", {"n": 1})
    alone = await send(engine_client, "solo", {"n": 2})
    together = await send(engine_client, "shared", {"n": 3})

    assert len(first["execution_ids"]) == 1
    assert (alone["outcome"], alone["execution_ids"]) == ("skipped", [])
    assert together["outcome"] == "accepted"
    skipped = (await engine_client.get(f"/api/v1/events/{alone['event_id']}")).json()
    assert skipped["outcome"] == "skipped"
    assert skipped["execution_ids"] == []
    assert skipped["outcome_detail"] == (
        f"skipped: workflow {limited}: concurrency limit 1 reached (overflow: skip)"
    )
    partly = (await engine_client.get(f"/api/v1/events/{together['event_id']}")).json()
    assert partly["outcome"] == "accepted"
    assert f"skipped: workflow {limited}: concurrency limit 1" in partly["outcome_detail"]
    [audited] = await all_finished(connection, audit, 1)
    assert partly["execution_ids"] == [audited["id"]]
    manual = await engine_client.post(f"/api/v1/workflows/{limited}/run", json={"input": {}})
    assert manual.status_code == 409, manual.text
    assert "concurrency limit 1 reached (overflow: skip)" in manual.json()["detail"]
    health = await health_when(engine_client, "solo", lambda found: found["skipped"] >= 1)
    assert (health["accepted"], health["skipped"]) == (1, 1)

    [only] = await all_finished(connection, limited, 1)
    assert only["id"] == first["execution_ids"][0]
    again = await send(engine_client, "solo", {"n": 4})  # the group has room again
    assert (again["outcome"], len(again["execution_ids"])) == ("accepted", 1)
    await all_finished(connection, limited, 2)
    await assert_invariants(engine_settings)


async def test_a_concurrency_key_that_cannot_be_rendered_skips_with_the_reason(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await register_event_source(engine_client, "orders")
    await import_published(
        engine_client,
        workflow("Keyed", trigger_keys=["orders"], delay_seconds=0.01,
                 concurrency={"limit": 2, "key": "{{ trigger.customer.id }}"}),
    )  # fmt: skip
    refused = await send(engine_client, "orders", {"n": 1})
    assert refused["outcome"] == "skipped"
    event = (await engine_client.get(f"/api/v1/events/{refused['event_id']}")).json()
    assert "the concurrency key could not be rendered" in event["outcome_detail"]
    assert "customer" in event["outcome_detail"]
    await assert_invariants(engine_settings)


# --- Schedules' overlap ----------------------------------------------------------------------

EVERY_SECOND = "* * * * * *"

FIRES_OF = """
SELECT outcome, outcome_detail FROM trigger_event
WHERE source->>'schedule_id' = $1 ORDER BY source->>'scheduled_for'
"""


@pytest.fixture
async def full_client(settings_for: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """API, worker and scheduler in one app on this test's database."""
    app = create_app(settings_for(roles=frozenset(Role), job_poll_interval_seconds=0.2))
    async with serving(app, token=API_TOKEN) as client:
        yield client


async def scheduled_run(
    client: httpx.AsyncClient, connection: asyncpg.Connection, overlap: str, *, finished: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A schedule firing every second with `overlap` for a workflow that takes three seconds:
    once `finished` executions are over, the schedule is disabled and every execution waited
    for. Returns the executions and the fires' events."""
    response = await client.post(
        "/api/v1/schedules",
        json={"trigger_key": "tick", "cron": EVERY_SECOND, "overlap": overlap, "payload": {"n": 0}},
    )
    assert response.status_code == 201, response.text
    schedule = response.json()
    assert schedule["overlap"] == overlap
    workflow_id = await import_published(
        client, workflow("Three seconds", trigger_keys=["tick"], delay_seconds=3)
    )
    await eventually(
        lambda: executions_of(connection, workflow_id),
        until=lambda rows: sum(row["status"] in FINISHED for row in rows) >= finished,
        what=f"{finished} finished executions",
        within=30.0,
        every=0.2,
    )
    disabled = await client.patch(f"/api/v1/schedules/{schedule['id']}", json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    executions = await all_finished(connection, workflow_id, 1)
    fires = [dict(row) for row in await connection.fetch(FIRES_OF, schedule["id"])]
    assert {row["overlap_key"] for row in executions} == {f"schedule:{schedule['id']}"}
    return executions, fires


@pytest.mark.timeout(60)
async def test_overlap_skip_starts_nothing_while_the_schedules_execution_runs(
    full_client: httpx.AsyncClient,
    connection: asyncpg.Connection,
    settings_for: Callable[..., Settings],
) -> None:
    executions, fires = await scheduled_run(full_client, connection, "skip", finished=2)

    assert [row["status"] for row in executions] == ["SUCCESS"] * len(executions)
    never_two_at_once(executions)
    skipped = [fire for fire in fires if fire["outcome"] == "skipped"]
    assert len(skipped) >= 2  # a fire every second, an execution every three
    assert all("(overlap: skip)" in fire["outcome_detail"] for fire in skipped)
    assert not any(row["held"] for row in executions)
    await assert_invariants(settings_for())


@pytest.mark.timeout(60)
async def test_overlap_buffer_one_lets_one_fire_wait_and_then_run(
    full_client: httpx.AsyncClient,
    connection: asyncpg.Connection,
    settings_for: Callable[..., Settings],
) -> None:
    executions, fires = await scheduled_run(full_client, connection, "buffer_one", finished=3)

    assert [row["status"] for row in executions] == ["SUCCESS"] * len(executions)
    never_two_at_once(executions)
    # Buffered: created while the one before it ran, started once it finished.
    for before, after in itertools.pairwise(executions):
        assert after["created_at"] < before["finished_at"] <= after["started_at"]
    # At most one waited at any moment: none was created while another waited to start.
    for waiting in executions:
        assert not any(
            waiting["created_at"] < other["created_at"] < waiting["started_at"]
            for other in executions
        )
    skipped = [fire for fire in fires if fire["outcome"] == "skipped"]
    assert skipped
    assert all("(overlap: buffer_one)" in fire["outcome_detail"] for fire in skipped)
    await assert_invariants(settings_for())


@pytest.mark.timeout(90)
async def test_a_schedule_and_events_share_a_concurrency_limit(
    full_client: httpx.AsyncClient,
    connection: asyncpg.Connection,
    settings_for: Callable[..., Settings],
) -> None:
    """Executions in two groups at once (the schedule's overlap group and the workflow's
    concurrency group) start only when both have room, whichever group's end admits them."""
    response = await full_client.post(
        "/api/v1/schedules",
        json={"trigger_key": "tick", "cron": EVERY_SECOND, "overlap": "buffer_one",
              "payload": {"n": 0}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    schedule = response.json()
    await register_event_source(full_client, "orders")
    workflow_id = await import_published(
        full_client,
        workflow("Shared limit", trigger_keys=["tick", "orders"], delay_seconds=1,
                 concurrency={"limit": 1}),
    )  # fmt: skip
    sent = []
    for n in range(1, 4):
        sent.extend((await send(full_client, "orders", {"n": n}))["execution_ids"])
    assert len(sent) == 3
    await eventually(
        lambda: executions_of(connection, workflow_id),
        until=lambda rows: sum(row["status"] in FINISHED for row in rows) >= 6,
        what="6 finished executions",
        within=60.0,
        every=0.2,
    )
    disabled = await full_client.patch(
        f"/api/v1/schedules/{schedule['id']}", json={"enabled": False}
    )
    assert disabled.status_code == 200, disabled.text
    executions = await all_finished(connection, workflow_id, 6)

    assert [row["status"] for row in executions] == ["SUCCESS"] * len(executions)
    never_two_at_once(executions)  # one at a time, whichever trigger started them
    assert {row["id"] for row in executions} >= set(sent)  # every event's execution ran
    scheduled = [row for row in executions if row["overlap_key"] is not None]
    assert len(scheduled) >= 2
    await assert_invariants(settings_for())
