"""`call_workflow` and `foreach` end to end: child executions started by a real worker,
awaited durably, their outputs collected, failures and cancels carried across."""

from __future__ import annotations

from typing import Any

import httpx

from config.settings import Settings
from tests.support.invariants import assert_invariants
from tests.support.workflows import import_published, run, steps_by_key, wait_for

CHILD: dict[str, Any] = {
    "name": "Score lead",
    "steps": [
        {"key": "check", "kind": "condition", "cfg": {"expression": "trigger.lead.score >= 0"}},
        {
            "key": "scored",
            "kind": "action",
            "action_key": "set_variables",
            "cfg": {"values": {"name": "{{ trigger.lead.name }}", "n": "{{ trigger.n }}"}},
        },
    ],
    "edges": [{"from": "check", "to": "scored", "branch_key": "true"}],
}


def caller(wait: bool = True) -> dict[str, Any]:
    return {
        "name": "Call scorer",
        "steps": [
            {
                "key": "enrich",
                "kind": "call_workflow",
                "cfg": {
                    "workflow": "Score lead",
                    "input": {"lead": "{{ trigger.lead }}", "n": 0},
                    "wait": wait,
                },
            },
            {
                "key": "after",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"child": "{{ steps.enrich.output.execution_id }}"}},
            },
        ],
        "edges": [{"from": "enrich", "to": "after"}],
    }


def fan_out(max_concurrency: int, on_item_failure: str = "fail") -> dict[str, Any]:
    return {
        "name": "Score every lead",
        "steps": [
            {
                "key": "each",
                "kind": "foreach",
                "cfg": {
                    "items": "{{ trigger.leads }}",
                    "workflow": "Score lead",
                    "input": {"lead": "{{ item }}", "n": "{{ index }}"},
                    "max_concurrency": max_concurrency,
                    "on_item_failure": on_item_failure,
                },
            },
        ],
    }


async def test_a_called_workflow_runs_as_a_child_and_its_output_comes_back(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await import_published(engine_client, CHILD)
    workflow_id = await import_published(engine_client, caller())
    parent = await wait_for(
        engine_client, await run(engine_client, workflow_id, {"lead": {"name": "Ann", "score": 7}})
    )
    assert parent["status"] == "SUCCESS", parent
    enrich = steps_by_key(parent)["enrich"]["result_data"]
    assert enrich["status"] == "SUCCESS"
    assert enrich["output"] == {"scored": {"name": "Ann", "n": 0}}
    child = (await engine_client.get(f"/api/v1/executions/{enrich['execution_id']}")).json()
    assert child["status"] == "SUCCESS"
    assert child["parent_execution_id"] == parent["id"]
    assert child["parent_step_key"] == "enrich"
    children = (
        await engine_client.get("/api/v1/executions", params={"parent_id": parent["id"]})
    ).json()["items"]
    assert [item["id"] for item in children] == [child["id"]]
    await assert_invariants(engine_settings)


async def test_a_foreach_collects_every_output_in_item_order(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await import_published(engine_client, CHILD)
    workflow_id = await import_published(engine_client, fan_out(max_concurrency=3))
    leads = [{"name": f"lead-{index}", "score": index} for index in range(25)]
    parent = await wait_for(engine_client, await run(engine_client, workflow_id, {"leads": leads}))
    assert parent["status"] == "SUCCESS", parent
    output = steps_by_key(parent)["each"]["result_data"]
    assert output["count"] == 25
    assert output["failed"] == []
    assert [result["scored"]["name"] for result in output["results"]] == [
        lead["name"] for lead in leads
    ]
    await assert_invariants(engine_settings)


async def test_a_failed_item_fails_the_foreach_and_cancels_the_rest(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await import_published(engine_client, CHILD)
    workflow_id = await import_published(engine_client, fan_out(max_concurrency=2))
    leads: list[Any] = [{"name": "a", "score": 1}, "not a lead", {"name": "c", "score": 3}] + [
        {"name": f"x{index}", "score": 1} for index in range(10)
    ]
    parent = await wait_for(engine_client, await run(engine_client, workflow_id, {"leads": leads}))
    assert parent["status"] == "FAILED", parent
    each = steps_by_key(parent)["each"]
    assert "item 1" in each["error"]
    assert 1 in each["result_data"]["failed"]
    children = (
        await engine_client.get(
            "/api/v1/executions", params={"parent_id": parent["id"], "limit": 100}
        )
    ).json()["items"]
    statuses = {child["status"] for child in children}
    assert "CANCELLED" in statuses
    assert statuses <= {"SUCCESS", "FAILED", "CANCELLED"}
    await assert_invariants(engine_settings)
