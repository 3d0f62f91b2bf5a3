"""Events: fan-out to subscriptions, filters, idempotency under races, no worker needed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.processes import ServerProcess
from tests.support.workflows import health_when, import_published, wait_for

NOTIFY: dict[str, Any] = {
    "name": "On order",
    "steps": [
        {
            "key": "note",
            "kind": "action",
            "action_key": "transform",
            "cfg": {"output": {"total": "{{ trigger.total }}"}},
        }
    ],
    "subscriptions": [
        {"trigger_key": "orders", "filter_conditions": {"expression": "trigger.total > 10"}}
    ],
}


async def _register(client: httpx.AsyncClient, key: str = "orders") -> None:
    response = await client.post(
        "/api/v1/registry/triggers", json={"trigger_key": key, "type": "event"}
    )
    assert response.status_code == 201


async def test_an_event_starts_each_subscribed_workflow_whose_filter_passes(
    engine_client: httpx.AsyncClient,
) -> None:
    await _register(engine_client)
    first = await import_published(engine_client, NOTIFY)
    second = await import_published(
        engine_client, {**NOTIFY, "name": "Second", "subscriptions": [{"trigger_key": "orders"}]}
    )
    response = await engine_client.post(
        "/api/v1/events", json={"trigger_key": "orders", "payload": {"total": 42}}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["outcome"], body["duplicate"], len(body["execution_ids"])) == (
        "accepted",
        False,
        2,
    )
    workflows = set()
    for execution_id in body["execution_ids"]:
        execution = await wait_for(engine_client, execution_id)
        assert execution["status"] == "SUCCESS"
        assert execution["trigger_type"] == "event"
        assert execution["trigger_event_id"] == body["event_id"]
        assert execution["steps"][0]["result_data"] == {"total": 42}
        workflows.add(execution["workflow_id"])
    assert workflows == {first, second}

    small = (
        await engine_client.post(
            "/api/v1/events", json={"trigger_key": "orders", "payload": {"total": 5}}
        )
    ).json()
    assert len(small["execution_ids"]) == 1  # only the unfiltered subscription


async def test_filtered_and_unmatched_events_are_kept_with_the_reason(
    engine_client: httpx.AsyncClient,
) -> None:
    await _register(engine_client)
    await _register(engine_client, "quiet")
    await import_published(engine_client, NOTIFY)
    filtered = (
        await engine_client.post(
            "/api/v1/events", json={"trigger_key": "orders", "payload": {"total": 1}}
        )
    ).json()
    assert (filtered["outcome"], filtered["execution_ids"]) == ("filtered", [])
    unmatched = (await engine_client.post("/api/v1/events", json={"trigger_key": "quiet"})).json()
    assert unmatched["outcome"] == "no_match"
    orders = await health_when(engine_client, "orders", lambda h: h["filtered"] == 1)
    assert orders["last_event_at"] is not None
    await health_when(engine_client, "quiet", lambda h: h["no_match"] == 1)


async def test_unknown_event_sources_are_refused_and_counted(
    engine_client: httpx.AsyncClient,
) -> None:
    response = await engine_client.post(
        "/api/v1/events", json={"trigger_key": "typo", "payload": {}}
    )
    assert response.status_code == 422
    assert "register it" in response.json()["detail"]


async def test_fifty_racing_duplicates_start_one_execution(
    engine_client: httpx.AsyncClient,
) -> None:
    await _register(engine_client)
    await import_published(engine_client, {**NOTIFY, "subscriptions": [{"trigger_key": "orders"}]})
    event = {"trigger_key": "orders", "payload": {"total": 99}, "idempotency_key": "order-1"}
    responses = await asyncio.gather(
        *(engine_client.post("/api/v1/events", json=event) for _ in range(50))
    )
    bodies = [r.json() for r in responses]
    assert {r.status_code for r in responses} == {202}
    assert len({b["event_id"] for b in bodies}) == 1
    assert len({tuple(b["execution_ids"]) for b in bodies}) == 1
    assert sum(not b["duplicate"] for b in bodies) == 1
    executions = (await engine_client.get("/api/v1/executions")).json()["items"]
    assert len(executions) == 1


async def test_events_accepted_with_no_worker_all_run_once_a_worker_starts(
    api_only: httpx.AsyncClient,
    start_worker: Callable[[], ServerProcess],
) -> None:
    await _register(api_only)
    await import_published(api_only, {**NOTIFY, "subscriptions": [{"trigger_key": "orders"}]})
    execution_ids = []
    for index in range(20):
        body = (
            await api_only.post(
                "/api/v1/events", json={"trigger_key": "orders", "payload": {"total": index}}
            )
        ).json()
        execution_ids += body["execution_ids"]
    assert len(execution_ids) == 20
    assert (await api_only.get(f"/api/v1/executions/{execution_ids[0]}")).json()[
        "status"
    ] == "PENDING"
    await asyncio.to_thread(start_worker)
    for execution_id in execution_ids:
        assert (await wait_for(api_only, execution_id))["status"] == "SUCCESS"
