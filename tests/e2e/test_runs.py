"""End-to-end runs of published workflows: branches, joins, delays, errors, control."""

from __future__ import annotations

from typing import Any

import httpx

from config.settings import Settings
from tests.support.invariants import assert_invariants
from tests.support.workflows import import_published, run, steps_by_key, wait_for

LEADS: dict[str, Any] = {
    "name": "Lead processing",
    "steps": [
        {"key": "hot", "kind": "condition", "cfg": {"expression": "trigger.score >= 50"}},
        {
            "key": "task",
            "kind": "action",
            "action_key": "task_management",
            "cfg": {"operation": "create", "title": "Call {{ trigger.name }}"},
        },
        {"key": "later", "kind": "delay", "cfg": {"seconds": 0.5}},
        {
            "key": "note",
            "kind": "action",
            "action_key": "set_variables",
            "cfg": {"values": {"after": "delay"}},
        },
    ],
    "edges": [
        {"from": "hot", "to": "task", "branch_key": "true"},
        {"from": "hot", "to": "later", "branch_key": "false"},
        {"from": "later", "to": "note"},
    ],
}


async def test_the_true_branch_creates_a_task_and_skips_the_other(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
) -> None:
    workflow_id = await import_published(engine_client, LEADS)
    execution = await wait_for(
        engine_client, await run(engine_client, workflow_id, {"score": 70, "name": "Ann"})
    )
    assert execution["status"] == "SUCCESS", execution
    steps = steps_by_key(execution)
    assert {key: step["status"] for key, step in steps.items()} == {
        "hot": "SUCCESS", "task": "SUCCESS", "later": "SKIPPED", "note": "SKIPPED",
    }  # fmt: skip
    assert steps["hot"]["result_data"] == {"result": True}
    assert steps["task"]["input_data"]["title"] == "Call Ann"
    task_id = steps["task"]["result_data"]["id"]
    task = (await engine_client.get(f"/api/v1/tasks/{task_id}")).json()
    assert task["title"] == "Call Ann"
    assert task["execution_id"] == execution["id"]
    await assert_invariants(engine_settings)


async def test_the_false_branch_waits_durably_then_continues(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
) -> None:
    workflow_id = await import_published(engine_client, LEADS)
    execution_id = await run(engine_client, workflow_id, {"score": 10, "name": "Bob"})
    waiting = await wait_for(engine_client, execution_id, {"WAITING", "SUCCESS"})
    assert waiting["status"] == "WAITING"
    assert steps_by_key(waiting)["later"]["status"] == "WAITING"
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS"
    steps = steps_by_key(done)
    assert (steps["task"]["status"], steps["later"]["status"], steps["note"]["status"]) == (
        "SKIPPED", "SUCCESS", "SUCCESS",
    )  # fmt: skip
    assert steps["note"]["result_data"] == {"after": "delay"}
    await assert_invariants(engine_settings)


def fan_out_document(width: int) -> dict[str, Any]:
    """start -> 10 parallel branches -> join -> 7 more steps in a line: 20 steps."""
    steps: list[dict[str, Any]] = [
        {
            "key": "start",
            "kind": "action",
            "action_key": "set_variables",
            "cfg": {"values": {"n": 1}},
        }
    ]
    edges: list[dict[str, str]] = []
    for index in range(width):
        key = f"branch{index}"
        steps.append({
            "key": key, "kind": "action", "action_key": "transform",
            "cfg": {"output": {"branch": index, "seen": "{{ steps.start.output.n }}"}},
        })  # fmt: skip
        edges += [{"from": "start", "to": key}, {"from": key, "to": "join"}]
    steps.append({
        "key": "join", "kind": "action", "action_key": "transform",
        "cfg": {"output": {"total": "{{ " + " + ".join(f"steps.branch{i}.output.branch" for i in range(width)) + " }}"}},
    })  # fmt: skip
    previous = "join"
    for index in range(19 - width - 1):
        key = f"tail{index}"
        steps.append(
            {
                "key": key,
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"i": index}},
            }
        )
        edges.append({"from": previous, "to": key})
        previous = key
    return {"name": "Fan out", "steps": steps, "edges": edges}


async def test_a_fan_out_of_ten_joins_once_and_every_step_runs_once(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
) -> None:
    document = fan_out_document(10)
    assert len(document["steps"]) == 20
    workflow_id = await import_published(engine_client, document)
    execution = await wait_for(engine_client, await run(engine_client, workflow_id))
    assert execution["status"] == "SUCCESS", execution
    keys = [step["step_key"] for step in execution["steps"]]
    assert sorted(keys) == sorted(step["key"] for step in document["steps"])  # each exactly once
    assert all(step["status"] == "SUCCESS" and step["attempts"] == 1 for step in execution["steps"])
    assert steps_by_key(execution)["join"]["result_data"] == {"total": sum(range(10))}
    await assert_invariants(engine_settings)


async def test_a_failing_step_takes_its_error_edge(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    document = {
        "name": "Errors",
        "steps": [
            {
                "key": "broken",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"x": "{{ trigger.missing.deep }}"}},
            },
            {
                "key": "handled",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"ok": True}},
            },
            {
                "key": "normal",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"ok": False}},
            },
        ],
        "edges": [
            {"from": "broken", "to": "handled", "branch_key": "error"},
            {"from": "broken", "to": "normal", "branch_key": "default"},
        ],
    }
    workflow_id = await import_published(engine_client, document)
    execution = await wait_for(engine_client, await run(engine_client, workflow_id))
    assert execution["status"] == "SUCCESS"
    steps = steps_by_key(execution)
    assert steps["broken"]["status"] == "FAILED"
    assert "cfg.values.x" in steps["broken"]["error"]
    assert "missing" in steps["broken"]["error"]
    assert (steps["handled"]["status"], steps["normal"]["status"]) == ("SUCCESS", "SKIPPED")
    await assert_invariants(engine_settings)


async def test_a_refused_task_fails_its_step_writes_nothing_and_takes_the_error_edge(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
) -> None:
    document = {
        "name": "Refused task",
        "steps": [
            {"key": "check", "kind": "condition", "cfg": {"expression": "true"}},
            {
                "key": "task",
                "kind": "action",
                "action_key": "task_management",
                # Jinja decodes the escape: the title holds a NUL, which PostgreSQL refuses.
                "cfg": {"operation": "create", "title": "{{ 'NUL \\x00 inside' }}"},
            },
            {
                "key": "handled",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"handled": True}},
            },
        ],
        "edges": [
            {"from": "check", "to": "task", "branch_key": "true"},
            {"from": "task", "to": "handled", "branch_key": "error"},
        ],
    }
    workflow_id = await import_published(engine_client, document)
    execution_id = await run(engine_client, workflow_id)
    execution = await wait_for(engine_client, execution_id)
    assert execution["status"] == "SUCCESS", execution
    steps = steps_by_key(execution)
    assert steps["task"]["status"] == "FAILED"
    assert "database refused" in steps["task"]["error"]
    assert steps["task"]["attempts"] == 1  # permanent: not retried
    assert steps["handled"]["status"] == "SUCCESS"
    tasks = await engine_client.get("/api/v1/tasks", params={"execution_id": execution_id})
    assert tasks.json()["items"] == []
    await assert_invariants(engine_settings)


async def test_an_unhandled_failure_fails_the_execution_and_retry_resumes_it(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
) -> None:
    document = {
        "name": "Needs a variable",
        "variables": [{"key": "mode", "value": {}}],
        "steps": [
            {
                "key": "first",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"a": 1}},
            },
            {
                "key": "uses",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"mode": "{{ vars.mode.value }}"}},
            },
        ],
        "edges": [{"from": "first", "to": "uses"}],
    }
    workflow_id = await import_published(engine_client, document)
    execution_id = await run(engine_client, workflow_id)
    failed = await wait_for(engine_client, execution_id)
    assert failed["status"] == "FAILED"
    assert "step 'uses' failed" in failed["error"]

    variable = await engine_client.post(
        f"/api/v1/workflows/{workflow_id}/variables",
        json={"key": "mode", "value": {"value": "fast"}},
    )
    assert variable.status_code in (200, 201)
    retried = await engine_client.post(f"/api/v1/executions/{execution_id}/retry")
    assert retried.status_code == 202
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS"
    steps = steps_by_key(done)
    assert steps["uses"]["result_data"] == {"mode": "fast"}
    assert steps["first"]["attempts"] == 1  # the step that had succeeded did not run again

    again = await engine_client.post(f"/api/v1/executions/{execution_id}/retry")
    assert again.status_code == 409
    # /metrics counts the failure and the success under the workflow's id (the dashboard's and
    # the per-workflow failure alert's label).
    metrics = (await engine_client.get("/metrics")).text
    for status in ("FAILED", "SUCCESS"):
        labels = f'status="{status}",workflow_id="{workflow_id}"'
        assert f"switchyard_executions_finished_total{{{labels}}} 1.0" in metrics, status
    await assert_invariants(engine_settings)


async def test_cancel_drops_waiting_work(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    document = {
        "name": "Long wait",
        "steps": [
            {"key": "wait", "kind": "delay", "cfg": {"seconds": 3600}},
            {
                "key": "after",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {}},
            },
        ],
        "edges": [{"from": "wait", "to": "after"}],
    }
    workflow_id = await import_published(engine_client, document)
    execution_id = await run(engine_client, workflow_id)
    await wait_for(engine_client, execution_id, {"WAITING"})
    cancelled = await engine_client.post(f"/api/v1/executions/{execution_id}/cancel")
    assert cancelled.status_code == 202
    body = cancelled.json()
    assert body["status"] == "CANCELLED"
    assert steps_by_key(body)["wait"]["status"] == "CANCELLED"
    assert (
        await engine_client.post(f"/api/v1/executions/{execution_id}/cancel")
    ).status_code == 409
    await assert_invariants(engine_settings)


async def test_runs_need_a_published_active_workflow(engine_client: httpx.AsyncClient) -> None:
    draft = (await engine_client.post("/api/v1/workflows/import", json=LEADS)).json()
    response = await engine_client.post(f"/api/v1/workflows/{draft['id']}/run", json={})
    assert response.status_code == 404
    assert "publish" in response.json()["detail"]
    missing = await engine_client.get("/api/v1/executions/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


async def test_executions_are_listed_newest_first_with_filters(
    engine_client: httpx.AsyncClient,
) -> None:
    workflow_id = await import_published(engine_client, LEADS)
    ids = [await run(engine_client, workflow_id, {"score": 90, "name": str(i)}) for i in range(3)]
    for execution_id in ids:
        await wait_for(engine_client, execution_id)
    page = (
        await engine_client.get(
            "/api/v1/executions", params={"workflow_id": workflow_id, "limit": 2}
        )
    ).json()
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    rest = (
        await engine_client.get(
            "/api/v1/executions", params={"workflow_id": workflow_id, "cursor": page["next_cursor"]}
        )
    ).json()
    assert [item["id"] for item in rest["items"]] == ids[:1]
    failed = (await engine_client.get("/api/v1/executions", params={"status": "FAILED"})).json()
    assert failed["items"] == []
    bad = await engine_client.get("/api/v1/executions", params={"status": "DONE"})
    assert bad.status_code == 400


async def test_deleting_a_workflow_deletes_its_executions_and_keeps_its_tasks(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
) -> None:
    workflow_id = await import_published(engine_client, LEADS)
    execution_id = await run(engine_client, workflow_id, {"score": 90, "name": "Zed"})
    await wait_for(engine_client, execution_id)
    assert (await engine_client.delete(f"/api/v1/workflows/{workflow_id}")).status_code == 204
    assert (await engine_client.get(f"/api/v1/executions/{execution_id}")).status_code == 404
    tasks = (await engine_client.get("/api/v1/tasks")).json()["items"]
    assert [(task["title"], task["execution_id"]) for task in tasks] == [("Call Zed", None)]
    await assert_invariants(engine_settings)


async def test_secret_values_never_reach_errors(engine_client: httpx.AsyncClient) -> None:
    document = {
        "name": "Leaky error",
        "variables": [{"key": "k", "value": "SUPERSECRET123", "secret": True}],
        "steps": [
            {"key": "check", "kind": "condition", "cfg": {"expression": "trigger[vars.k] == 1"}}
        ],
    }
    workflow_id = await import_published(engine_client, document)
    execution = await wait_for(engine_client, await run(engine_client, workflow_id, {"a": 1}))
    assert execution["status"] == "FAILED"
    assert "SUPERSECRET123" not in str(execution)
    assert "[redacted]" in execution["error"]


async def test_retry_reruns_the_failure_that_ended_the_run_not_a_handled_one(
    engine_client: httpx.AsyncClient,
    engine_settings: Settings,
) -> None:
    document = {
        "name": "Handled then failed",
        "variables": [{"key": "mode", "value": {}}, {"key": "other", "value": {}}],
        "steps": [
            {
                "key": "a",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"x": "{{ vars.mode.x }}"}},
            },
            {
                "key": "handler",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"y": "{{ vars.other.y }}"}},
            },
            {"key": "b", "kind": "action", "action_key": "set_variables", "cfg": {"values": {}}},
        ],
        "edges": [{"from": "a", "to": "handler", "branch_key": "error"}, {"from": "a", "to": "b"}],
    }
    workflow_id = await import_published(engine_client, document)
    execution_id = await run(engine_client, workflow_id)
    failed = await wait_for(engine_client, execution_id)
    assert failed["status"] == "FAILED"
    assert "step 'handler' failed" in failed["error"]
    await engine_client.post(
        f"/api/v1/workflows/{workflow_id}/variables", json={"key": "other", "value": {"y": "ok"}}
    )
    assert (await engine_client.post(f"/api/v1/executions/{execution_id}/retry")).status_code == 202
    done = await wait_for(engine_client, execution_id)
    steps = steps_by_key(done)
    assert done["status"] == "SUCCESS"
    assert (steps["a"]["status"], steps["handler"]["status"], steps["b"]["status"]) == (
        "FAILED",
        "SUCCESS",
        "SKIPPED",
    )
    assert steps["handler"]["result_data"] == {"y": "ok"}
    await assert_invariants(engine_settings)
