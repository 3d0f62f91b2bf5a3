from __future__ import annotations

import json
from pathlib import Path

import httpx

TASK_STEP = {
    "key": "task",
    "kind": "action",
    "action_key": "task_management",
    "cfg": {"operation": "create", "title": "Call {{ trigger.name }}"},
}
HOT_STEP = {"key": "hot", "kind": "condition", "cfg": {"expression": "trigger.score >= 50"}}


async def _draft(client: httpx.AsyncClient) -> str:
    workflow = (await client.post("/api/v1/workflows", json={"name": "Leads"})).json()
    created = await client.post(f"/api/v1/workflows/{workflow['id']}/versions", json={})
    assert created.status_code == 201, created.text
    assert created.json()["version_num"] == 1
    return f"/api/v1/workflows/{workflow['id']}/versions/1"


async def test_build_a_draft_and_publish_it_to_the_object_store(
    api_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    url = await _draft(api_client)
    assert (await api_client.post(f"{url}/steps", json=HOT_STEP)).status_code == 201
    assert (await api_client.post(f"{url}/steps", json=TASK_STEP)).status_code == 201
    edge = await api_client.post(
        f"{url}/edges", json={"from": "hot", "to": "task", "branch_key": "true"}
    )
    assert edge.status_code == 201, edge.text
    assert edge.json()["from"] == "hot"

    published = await api_client.post(f"{url}/publish")
    assert published.status_code == 200, published.text
    version = published.json()
    assert version["status"] == "published"
    workflow_id = version["workflow_id"]
    assert version["s3_key"] == f"workflows/{workflow_id}/v1.json"
    snapshot = json.loads((tmp_path / "data" / "objects" / version["s3_key"]).read_bytes())
    assert [step["key"] for step in snapshot["steps"]] == ["hot", "task"]
    assert snapshot["edges"] == [{"from": "hot", "to": "task", "branch_key": "true"}]


async def test_published_versions_are_immutable_and_point_to_a_new_draft(
    api_client: httpx.AsyncClient,
) -> None:
    url = await _draft(api_client)
    step = (await api_client.post(f"{url}/steps", json=TASK_STEP)).json()
    assert (await api_client.post(f"{url}/publish")).status_code == 200

    for response in (
        await api_client.post(f"{url}/steps", json=HOT_STEP),
        await api_client.patch(f"{url}/steps/{step['id']}", json={"name": "x"}),
        await api_client.delete(f"{url}/steps/{step['id']}"),
        await api_client.post(f"{url}/publish"),
    ):
        assert response.status_code == 409
        assert "new draft" in response.json()["detail"]

    versions_url = url.rsplit("/", 1)[0]
    second = await api_client.post(versions_url, json={"from_latest": True})
    assert second.status_code == 201
    assert second.json()["version_num"] == 2
    assert [s["key"] for s in second.json()["steps"]] == ["task"]
    another = await api_client.post(versions_url, json={})
    assert another.status_code == 409
    assert "already has draft version 2" in another.json()["detail"]


async def test_invalid_steps_are_refused_when_saved_with_every_problem(
    api_client: httpx.AsyncClient,
) -> None:
    url = await _draft(api_client)
    response = await api_client.post(
        f"{url}/steps",
        json={
            "key": "t",
            "kind": "action",
            "action_key": "task_management",
            "cfg": {"operation": "explode", "title": "{{ trigger.name ", "extra": 1},
        },
    )
    assert response.status_code == 422
    locations = sorted(error["field"] for error in response.json()["errors"])
    assert locations == ["steps[t].cfg", "steps[t].cfg.operation", "steps[t].cfg.title"]

    unknown = await api_client.post(
        f"{url}/steps", json={"key": "x", "kind": "action", "action_key": "fax"}
    )
    assert unknown.status_code == 422
    assert "unknown action 'fax'" in unknown.json()["errors"][0]["message"]

    delay = await api_client.post(
        f"{url}/steps", json={"key": "d", "kind": "delay", "cfg": {"seconds": -1}}
    )
    assert delay.status_code == 422
    assert delay.json()["errors"][0]["field"] == "steps[d].cfg.seconds"

    condition = await api_client.post(
        f"{url}/steps", json={"key": "c", "kind": "condition", "cfg": {"expression": "a >"}}
    )
    assert condition.status_code == 422
    assert "does not compile" in condition.json()["errors"][0]["message"]


async def test_edges_are_checked_against_the_graph(api_client: httpx.AsyncClient) -> None:
    url = await _draft(api_client)
    for step in (HOT_STEP, TASK_STEP, {**TASK_STEP, "key": "task2"}):
        assert (await api_client.post(f"{url}/steps", json=step)).status_code == 201

    bad_branch = await api_client.post(
        f"{url}/edges", json={"from": "task", "to": "task2", "branch_key": "true"}
    )
    assert bad_branch.status_code == 422
    assert "use one of default, error" in bad_branch.json()["errors"][0]["message"]
    unknown = await api_client.post(f"{url}/edges", json={"from": "task", "to": "nope"})
    assert unknown.status_code == 422
    assert (
        await api_client.post(f"{url}/edges", json={"from": "task", "to": "task2"})
    ).status_code == 201
    duplicate = await api_client.post(f"{url}/edges", json={"from": "task", "to": "task2"})
    assert duplicate.status_code == 409
    cycle = await api_client.post(f"{url}/edges", json={"from": "task2", "to": "task"})
    assert cycle.status_code == 422
    assert "cycle" in cycle.json()["errors"][0]["message"]


async def test_publish_reports_every_graph_problem_and_leaves_a_draft(
    api_client: httpx.AsyncClient,
) -> None:
    url = await _draft(api_client)
    empty = await api_client.post(f"{url}/publish")
    assert empty.status_code == 422
    for step in (TASK_STEP, {**TASK_STEP, "key": "task2"}):
        await api_client.post(f"{url}/steps", json=step)
    report = (await api_client.get(f"{url}/validation")).json()
    assert report["valid"] is False
    assert "exactly one entry step" in report["errors"][0]["message"]
    refused = await api_client.post(f"{url}/publish")
    assert refused.status_code == 422
    assert refused.json()["errors"] == report["errors"]
    assert (await api_client.get(url)).json()["status"] == "draft"


async def test_step_patch_merges_fields_and_revalidates(api_client: httpx.AsyncClient) -> None:
    url = await _draft(api_client)
    step = (await api_client.post(f"{url}/steps", json=TASK_STEP)).json()
    renamed = await api_client.patch(f"{url}/steps/{step['id']}", json={"name": "Create task"})
    assert renamed.status_code == 200
    assert renamed.json()["cfg"] == TASK_STEP["cfg"]
    assert renamed.json()["name"] == "Create task"
    broken = await api_client.patch(f"{url}/steps/{step['id']}", json={"cfg": {}})
    assert broken.status_code == 422
    missing = await api_client.get(f"{url}/steps/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
