"""`wait_for_event` end to end through a real worker: resumed by an event (arriving after the
wait began, or before it), by its timeout (its `timeout` branch, or a failure without one), by
the API, and by a signed single-use link from an email (the approval flow)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from config.settings import Role, Settings
from tests.support.invariants import assert_invariants
from tests.support.workflows import import_published, run, steps_by_key, wait_for

PUBLIC_URL = "http://switchyard.test"  # the base URL of `engine_client`: its links are ours


@pytest.fixture
def engine_settings(settings_for: Callable[..., Settings]) -> Settings:
    """`engine_client`'s app with PUBLIC_URL, so templates can make resume links."""
    return settings_for(
        roles=frozenset({Role.API, Role.WORKER}),
        job_poll_interval_seconds=0.2,
        http_allowed_hosts=("127.0.0.1",),
        public_url=PUBLIC_URL,
    )


def wait_step(
    key: str = "approval", correlation_key: str = "{{ trigger.order_id }}", **cfg: Any
) -> dict[str, Any]:
    return {
        "key": key,
        "kind": "wait_for_event",
        "cfg": {"trigger_key": "approvals", "correlation_key": correlation_key, **cfg},
    }


def record(key: str, **values: Any) -> dict[str, Any]:
    return {"key": key, "kind": "action", "action_key": "set_variables", "cfg": {"values": values}}


def chain(
    name: str, *steps: dict[str, Any], edges: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """A workflow of `steps`, one after another unless `edges` are given."""
    if edges is None:
        edges = [{"from": a["key"], "to": b["key"]} for a, b in itertools.pairwise(steps)]
    return {"name": name, "steps": list(steps), "edges": edges}


async def register_event_source(client: httpx.AsyncClient, trigger_key: str = "approvals") -> None:
    response = await client.post(
        "/api/v1/registry/triggers", json={"trigger_key": trigger_key, "type": "event"}
    )
    assert response.status_code == 201, response.text


async def send(
    client: httpx.AsyncClient, payload: Any, correlation_key: str, trigger_key: str = "approvals"
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/events",
        json={"trigger_key": trigger_key, "payload": payload, "correlation_key": correlation_key},
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def queued_timeouts(client: httpx.AsyncClient) -> float:
    """The `wait_timeout` jobs queued now, from the queue depth /metrics reports."""
    scraped = (await client.get("/metrics")).text
    found = re.search(r'switchyard_queue_jobs\{kind="wait_timeout",state="queued"\} (\S+)', scraped)
    return float(found[1]) if found else 0.0


async def test_an_event_arriving_during_the_wait_resumes_it_with_its_payload(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await register_event_source(engine_client)
    workflow_id = await import_published(
        engine_client,
        chain(
            "Wait for approval",
            wait_step(timeout_seconds=3600),
            record("after", decision="{{ steps.approval.output.decision }}"),
        ),
    )
    execution_id = await run(engine_client, workflow_id, {"order_id": 42})
    waiting = await wait_for(engine_client, execution_id, {"WAITING"})
    approval = steps_by_key(waiting)["approval"]
    assert approval["status"] == "WAITING"
    assert approval["result_data"]["waiting_for"] == {
        "trigger_key": "approvals",
        "correlation_key": "42",
    }
    assert await queued_timeouts(engine_client) == 1
    other = await send(engine_client, {"decision": "no"}, correlation_key="43")
    assert other["resumed_execution_ids"] == []
    sent = await send(engine_client, {"decision": "yes"}, correlation_key="42")
    assert sent["resumed_execution_ids"] == [execution_id]
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS", done
    steps = steps_by_key(done)
    assert steps["approval"]["result_data"] == {"decision": "yes"}
    assert steps["approval"]["input_data"]["correlation_key"] == "42"
    assert steps["after"]["result_data"] == {"decision": "yes"}
    assert await queued_timeouts(engine_client) == 0  # withdrawn once the wait went on
    event = (await engine_client.get(f"/api/v1/events/{sent['event_id']}")).json()
    assert event["correlation_key"] == "42"
    assert execution_id in event["outcome_detail"]
    again = await send(engine_client, {"decision": "late"}, correlation_key="42")
    assert again["resumed_execution_ids"] == []
    await assert_invariants(engine_settings)


async def test_an_event_that_arrived_before_the_wait_began_counts(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    """The execution first waits at a gate (another key), so the awaited event certainly
    arrives before the second wait begins."""
    await register_event_source(engine_client)
    workflow_id = await import_published(
        engine_client,
        chain(
            "Gate, then wait",
            wait_step("gate", correlation_key="gate-{{ trigger.order_id }}"),
            wait_step("approval"),
            record("after", decision="{{ steps.approval.output.decision }}"),
        ),
    )
    execution_id = await run(engine_client, workflow_id, {"order_id": "A-7"})
    await wait_for(engine_client, execution_id, {"WAITING"})
    early = await send(engine_client, {"decision": "early"}, correlation_key="A-7")
    assert early["resumed_execution_ids"] == []  # nothing waits for it yet
    opened = await send(engine_client, {}, correlation_key="gate-A-7")
    assert opened["resumed_execution_ids"] == [execution_id]
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS", done
    assert steps_by_key(done)["after"]["result_data"] == {"decision": "early"}
    await assert_invariants(engine_settings)


async def test_an_event_sent_before_the_execution_started_does_not_count(
    engine_client: httpx.AsyncClient,
) -> None:
    await register_event_source(engine_client)
    await send(engine_client, {"decision": "stale"}, correlation_key="B-1")
    workflow_id = await import_published(engine_client, chain("Wait", wait_step()))
    execution_id = await run(engine_client, workflow_id, {"order_id": "B-1"})
    waiting = await wait_for(engine_client, execution_id, {"WAITING"})
    assert steps_by_key(waiting)["approval"]["status"] == "WAITING"
    await send(engine_client, {"decision": "fresh"}, correlation_key="B-1")
    done = await wait_for(engine_client, execution_id)
    assert steps_by_key(done)["approval"]["result_data"] == {"decision": "fresh"}


async def test_a_timeout_takes_the_timeout_branch(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await register_event_source(engine_client)
    document = chain(
        "Wait or give up",
        wait_step(timeout_seconds=0.5),
        record("approved", decision="{{ steps.approval.output.decision }}"),
        record("gave_up", reason="no answer"),
        edges=[
            {"from": "approval", "to": "approved"},
            {"from": "approval", "to": "gave_up", "branch_key": "timeout"},
        ],
    )
    workflow_id = await import_published(engine_client, document)
    done = await wait_for(engine_client, await run(engine_client, workflow_id, {"order_id": 1}))
    assert done["status"] == "SUCCESS", done
    steps = steps_by_key(done)
    assert steps["approval"]["result_data"] == {
        "timed_out": True,
        "waiting_for": {"trigger_key": "approvals", "correlation_key": "1"},
    }
    assert steps["approved"]["status"] == "SKIPPED"
    assert steps["gave_up"]["result_data"] == {"reason": "no answer"}
    await assert_invariants(engine_settings)


async def test_a_timeout_without_a_timeout_edge_fails_the_step(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await register_event_source(engine_client)
    workflow_id = await import_published(
        engine_client, chain("Wait or fail", wait_step(timeout_seconds=0.3), record("after"))
    )
    done = await wait_for(engine_client, await run(engine_client, workflow_id, {"order_id": 9}))
    assert done["status"] == "FAILED", done
    approval = steps_by_key(done)["approval"]
    assert approval["status"] == "FAILED"
    assert "timed out after 0.3 s waiting for an event of 'approvals'" in approval["error"]
    assert "correlation key '9'" in approval["error"]
    await assert_invariants(engine_settings)
