from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx

DOCUMENT: dict[str, Any] = {
    "name": "Lead processing",
    "description": "Route new leads",
    "category": "automation",
    "tags": ["sales"],
    "variables": [
        {"key": "owner", "value": "ops@example.com", "secret": False},
        {"key": "api_key", "value": "s3cr3t-value", "secret": True},
    ],
    "steps": [
        {"key": "hot", "kind": "condition", "cfg": {"expression": "trigger.score >= 50"}},
        {
            "key": "task",
            "kind": "action",
            "action_key": "task_management",
            "cfg": {"operation": "create", "title": "Call {{ trigger.name }}"},
        },
        {"key": "later", "kind": "delay", "cfg": {"seconds": 3600}},
    ],
    "edges": [
        {"from": "hot", "to": "task", "branch_key": "true"},
        {"from": "hot", "to": "later", "branch_key": "false"},
    ],
    "subscriptions": [{"trigger_key": "lead-intake", "filter_conditions": {}}],
}


async def register_source(client: httpx.AsyncClient, trigger_key: str = "lead-intake") -> None:
    """Subscriptions must name a registered trigger key to publish."""
    response = await client.post(
        "/api/v1/registry/triggers", json={"trigger_key": trigger_key, "type": "event"}
    )
    assert response.status_code == 201, response.text


def masked(document: dict[str, Any]) -> dict[str, Any]:
    expected = copy.deepcopy(document)
    for variable in expected["variables"]:
        if variable["secret"]:
            variable["value"] = None
    # Documents come back in canonical order: variables by key, edges by (from, to, branch).
    expected["variables"].sort(key=lambda v: v["key"])
    expected["edges"].sort(key=lambda e: (e["from"], e["to"], e["branch_key"]))
    # The workflow options a document leaves out come back as null (DESIGN §5.1).
    expected.setdefault("on_failure", None)
    expected.setdefault("concurrency", None)
    return expected


async def test_import_publishes_and_export_returns_the_same_document_with_secrets_masked(
    api_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await register_source(api_client)
    response = await api_client.post(
        "/api/v1/workflows/import", params={"publish": "true"}, json=DOCUMENT
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["version_num"] == 1
    assert created["published"] is True

    exported = await api_client.get(f"/api/v1/workflows/{created['id']}/export")
    assert exported.status_code == 200
    assert exported.json() == masked(DOCUMENT)
    assert "s3cr3t-value" not in exported.text

    snapshot = tmp_path / "data" / "objects" / "workflows" / created["id"] / "v1.json"
    assert json.loads(snapshot.read_bytes()) == masked(DOCUMENT)
    assert b"s3cr3t-value" not in snapshot.read_bytes()

    again = await api_client.post("/api/v1/workflows/import", json=exported.json())
    assert again.status_code == 201
    assert again.json()["published"] is False
    reexported = await api_client.get(f"/api/v1/workflows/{again.json()['id']}/export")
    assert reexported.json() == exported.json()


async def test_an_invalid_document_creates_nothing_and_lists_every_problem(
    api_client: httpx.AsyncClient,
) -> None:
    broken = copy.deepcopy(DOCUMENT)
    broken["steps"][1]["action_key"] = "teleport"
    broken["edges"].append({"from": "later", "to": "ghost"})
    response = await api_client.post("/api/v1/workflows/import", json=broken)
    assert response.status_code == 422
    messages = [error["message"] for error in response.json()["errors"]]
    assert any("unknown action 'teleport'" in m for m in messages)
    assert any("unknown step 'ghost'" in m for m in messages)
    assert (await api_client.get("/api/v1/workflows")).json()["items"] == []


async def test_wrongly_typed_documents_answer_400_naming_the_field(
    api_client: httpx.AsyncClient,
) -> None:
    broken = copy.deepcopy(DOCUMENT)
    broken["steps"][0]["kind"] = "loop"
    response = await api_client.post("/api/v1/workflows/import", json=broken)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "steps[0].kind"


async def test_the_view_matches_the_export_of_the_published_version(
    api_client: httpx.AsyncClient,
) -> None:
    await register_source(api_client)
    created = (await api_client.post("/api/v1/workflows/import?publish=true", json=DOCUMENT)).json()
    exported = (await api_client.get(f"/api/v1/workflows/{created['id']}/export")).json()
    from piccolo.engine import engine_finder

    engine = engine_finder()
    assert engine is not None
    rows = await engine.run_ddl("SELECT document FROM workflow_latest_json")
    assert json.loads(rows[0]["document"]) == exported


async def test_a_document_put_on_a_workflow_becomes_its_next_version_or_replaces_its_draft(
    api_client: httpx.AsyncClient,
) -> None:
    await register_source(api_client)
    created = (await api_client.post("/api/v1/workflows/import?publish=true", json=DOCUMENT)).json()
    url = f"/api/v1/workflows/{created['id']}/document"
    edited = copy.deepcopy(DOCUMENT)
    edited["name"] = "Lead routing"
    edited["variables"][1]["value"] = None  # as exports show a secret: the stored value stays
    edited["steps"][1]["cfg"]["title"] = "Call {{ trigger.name }} now"

    draft = await api_client.put(url, json=edited)
    assert draft.status_code == 201, draft.text
    assert draft.json() == {"id": created["id"], "version_num": 2, "published": False}
    edited["tags"] = ["sales", "fixed"]
    again = await api_client.put(url, params={"publish": "true"}, json=edited)
    assert again.json() == {"id": created["id"], "version_num": 2, "published": True}

    versions = (await api_client.get(f"/api/v1/workflows/{created['id']}/versions")).json()
    assert [(v["version_num"], v["status"]) for v in versions["items"]] == [
        (1, "published"),
        (2, "published"),
    ]
    exported = (await api_client.get(f"/api/v1/workflows/{created['id']}/export")).json()
    assert exported == masked(edited)
    variables = (await api_client.get(f"/api/v1/workflows/{created['id']}/variables")).json()
    assert {v["key"]: v["has_value"] for v in variables["items"]} == {
        "api_key": True,
        "owner": True,
    }
    workflows = (await api_client.get("/api/v1/workflows")).json()["items"]
    assert [w["name"] for w in workflows] == ["Lead routing"]  # no duplicate workflow

    broken = copy.deepcopy(edited)
    broken["steps"][1]["cfg"]["title"] = "Call {{ steps.hott.output }}"
    refused = await api_client.put(url, params={"publish": "true"}, json=broken)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "steps[task].cfg.title"
    missing = await api_client.put(
        "/api/v1/workflows/00000000-0000-0000-0000-000000000000/document", json=edited
    )
    assert missing.status_code == 404
