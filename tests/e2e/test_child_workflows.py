"""`call_workflow` and `foreach` end to end: child executions started by a real worker,
awaited durably, their outputs collected, failures and cancels carried across."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx

from config.settings import Settings
from tests.support.invariants import assert_invariants
from tests.support.waiting import eventually
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


async def test_a_thousand_items_never_run_more_than_max_concurrency_at_once(
    engine_client: httpx.AsyncClient, engine_settings: Settings, database_dsn: str
) -> None:
    await import_published(engine_client, CHILD)
    workflow_id = await import_published(engine_client, fan_out(max_concurrency=20))
    leads = [{"name": f"lead-{index}", "score": index} for index in range(1000)]
    parent_id = await run(engine_client, workflow_id, {"leads": leads})
    peak = 0
    connection = await asyncpg.connect(database_dsn)
    try:
        while True:  # sample the started, unfinished children while the fan-out runs
            running = await connection.fetchval(
                "SELECT count(*) FROM workflow_execution WHERE parent_execution_id = $1 "
                "AND NOT held AND status IN ('PENDING', 'RUNNING', 'WAITING')",
                uuid.UUID(parent_id),
            )
            peak = max(peak, running)
            status = await connection.fetchval(
                "SELECT status FROM workflow_execution WHERE id = $1", uuid.UUID(parent_id)
            )
            if status in ("SUCCESS", "FAILED", "CANCELLED"):
                break
            await asyncio.sleep(0.02)
        overlap = await connection.fetchval(
            """SELECT max(n) FROM (
                   SELECT count(*) OVER (ORDER BY t, d DESC ROWS UNBOUNDED PRECEDING)
                          - count(*) FILTER (WHERE d < 0) OVER (ORDER BY t, d DESC
                                                              ROWS UNBOUNDED PRECEDING) * 2 AS n
                   FROM (SELECT started_at AS t, 1 AS d FROM workflow_execution
                         WHERE parent_execution_id = $1
                         UNION ALL
                         SELECT finished_at, -1 FROM workflow_execution
                         WHERE parent_execution_id = $1) points) running""",
            uuid.UUID(parent_id),
        )
    finally:
        await connection.close()
    parent = await wait_for(engine_client, parent_id)
    assert parent["status"] == "SUCCESS", parent
    assert 1 <= peak <= 20
    assert overlap <= 20
    output = steps_by_key(parent)["each"]["result_data"]
    assert output["count"] == 1000
    assert [result["scored"]["n"] for result in output["results"]] == list(range(1000))
    assert parent["children"] == {"total": 1000, "by_status": {"SUCCESS": 1000}}
    await assert_invariants(engine_settings)


async def test_cancelling_a_parent_cancels_its_children(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    slow_child = {
        "name": "Score lead",
        "steps": [{"key": "wait", "kind": "delay", "cfg": {"seconds": 30}}],
    }
    await import_published(engine_client, slow_child)
    workflow_id = await import_published(engine_client, fan_out(max_concurrency=2))
    parent_id = await run(engine_client, workflow_id, {"leads": [1, 2, 3, 4, 5]})
    await wait_for(engine_client, parent_id, {"WAITING"})
    cancelled = await engine_client.post(f"/api/v1/executions/{parent_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    children = (
        await engine_client.get("/api/v1/executions", params={"parent_id": parent_id})
    ).json()["items"]
    assert len(children) == 5
    assert {child["status"] for child in children} == {"CANCELLED"}
    assert sum(child["held"] for child in children) == 0
    await assert_invariants(engine_settings)


async def test_a_failed_child_takes_the_callers_error_edge(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await import_published(engine_client, CHILD)
    document = caller()
    document["steps"].append(
        {"key": "handled", "kind": "action", "action_key": "set_variables",
         "cfg": {"values": {"handled": True}}}
    )  # fmt: skip
    document["edges"].append({"from": "enrich", "to": "handled", "branch_key": "error"})
    workflow_id = await import_published(engine_client, document)
    parent = await wait_for(
        engine_client, await run(engine_client, workflow_id, {"lead": "no score"})
    )
    assert parent["status"] == "SUCCESS", parent
    steps = steps_by_key(parent)
    assert steps["enrich"]["status"] == "FAILED"
    assert "ended FAILED" in steps["enrich"]["error"]
    assert steps["handled"]["result_data"] == {"handled": True}
    assert steps["enrich"]["result_data"]["status"] == "FAILED"
    assert steps["after"]["status"] == "SKIPPED"
    await assert_invariants(engine_settings)


async def test_without_wait_the_step_ends_at_once_and_the_child_still_runs(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await import_published(engine_client, CHILD)
    workflow_id = await import_published(engine_client, caller(wait=False))
    parent = await wait_for(
        engine_client, await run(engine_client, workflow_id, {"lead": {"name": "Bo", "score": 1}})
    )
    assert parent["status"] == "SUCCESS", parent
    child_id = steps_by_key(parent)["enrich"]["result_data"]["execution_id"]
    assert steps_by_key(parent)["after"]["result_data"] == {"child": child_id}
    child = await wait_for(engine_client, child_id)
    assert child["status"] == "SUCCESS"
    await assert_invariants(engine_settings)


async def test_a_failed_execution_starts_its_failure_workflow_once(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    alert = {
        "name": "Alert on-call",
        "steps": [{"key": "page", "kind": "action", "action_key": "set_variables",
                   "cfg": {"values": {"failed": "{{ trigger.failed_execution_id }}",
                                      "steps": "{{ trigger.failed_steps }}",
                                      "was": "{{ trigger.trigger }}"}}}],
    }  # fmt: skip
    alert_id = await import_published(engine_client, alert)
    failing = {
        "name": "Fails",
        "steps": [{"key": "boom", "kind": "condition", "cfg": {"expression": "trigger.x.y"}}],
        "on_failure": {"workflow": "Alert on-call"},
    }
    workflow_id = await import_published(engine_client, failing)
    failed = await wait_for(engine_client, await run(engine_client, workflow_id, {"x": 1}))
    assert failed["status"] == "FAILED"

    async def alerts() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await engine_client.get("/api/v1/executions", params={"workflow_id": alert_id})
        ).json()["items"]
        return items

    found = await eventually(alerts, until=lambda items: len(items) == 1, what="one alert")
    alerted = await wait_for(engine_client, found[0]["id"])
    assert alerted["trigger_type"] == "on_failure"
    page = steps_by_key(alerted)["page"]["result_data"]
    assert page["failed"] == failed["id"]
    assert page["steps"][0]["step_key"] == "boom"
    assert page["was"] == {"x": 1}
    # A failure workflow's own failure starts nothing more; the alert ran once.
    await asyncio.sleep(0.5)
    assert len(await alerts()) == 1
    await assert_invariants(engine_settings)


async def test_deleting_the_called_workflow_fails_the_waiting_caller(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    slow_child = {
        "name": "Score lead",
        "steps": [{"key": "wait", "kind": "delay", "cfg": {"seconds": 30}}],
    }
    child_workflow = await import_published(engine_client, slow_child)
    workflow_id = await import_published(engine_client, caller())
    parent_id = await run(engine_client, workflow_id, {"lead": {}})
    await wait_for(engine_client, parent_id, {"WAITING"})
    assert (await engine_client.delete(f"/api/v1/workflows/{child_workflow}")).status_code == 204
    parent = await wait_for(engine_client, parent_id)
    assert parent["status"] == "FAILED"
    assert "gone" in steps_by_key(parent)["enrich"]["error"]
    await assert_invariants(engine_settings)
