"""Flow steps and workflow options in documents: checked at publish (unknown workflows, calls
that loop back, items that are no list, a timeout edge without a timeout), kept by drafts, and
round-tripped by export and import."""

from __future__ import annotations

import copy
from typing import Any

import httpx

CHILD: dict[str, Any] = {
    "name": "Process lead",
    "steps": [{"key": "noted", "kind": "action", "action_key": "set_variables",
               "cfg": {"values": {"lead": "{{ trigger.lead }}"}}}],
}  # fmt: skip


def parent(**options: Any) -> dict[str, Any]:
    return {
        "name": "Leads in bulk",
        "steps": [
            {"key": "each", "kind": "foreach",
             "cfg": {"items": "{{ trigger.leads }}", "workflow": "Process lead",
                     "input": {"lead": "{{ item }}", "n": "{{ index }}"},
                     "max_concurrency": 5, "on_item_failure": "continue"}},
            {"key": "one", "kind": "call_workflow",
             "cfg": {"workflow": "Process lead", "input": {"lead": "x"}, "wait": False}},
            {"key": "approval", "kind": "wait_for_event",
             "cfg": {"trigger_key": "approvals", "correlation_key": "{{ trigger.id }}",
                     "timeout_seconds": 60}},
            {"key": "late", "kind": "action", "action_key": "set_variables",
             "cfg": {"values": {"late": True}}},
        ],
        "edges": [
            {"from": "each", "to": "one"},
            {"from": "one", "to": "approval"},
            {"from": "approval", "to": "late", "branch_key": "timeout"},
        ],
        **options,
    }  # fmt: skip


async def import_document(
    client: httpx.AsyncClient, document: dict[str, Any], *, publish: bool = True
) -> httpx.Response:
    return await client.post(
        "/api/v1/workflows/import", params={"publish": str(publish).lower()}, json=document
    )


def fields(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {error["field"]: error["message"] for error in response.json()["errors"]}


async def test_a_flow_document_with_options_round_trips_through_export_and_import(
    api_client: httpx.AsyncClient,
) -> None:
    assert (await import_document(api_client, CHILD)).status_code == 201
    document = parent(
        on_failure={"workflow": "Process lead"},
        concurrency={"limit": 2, "key": "{{ trigger.customer }}", "overflow": "skip"},
    )
    created = await import_document(api_client, document)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    exported = (await api_client.get(f"/api/v1/workflows/{workflow_id}/export")).json()
    assert exported["on_failure"] == {"workflow": "Process lead"}
    assert exported["concurrency"] == document["concurrency"]
    assert [step["kind"] for step in exported["steps"]] == [
        "foreach", "call_workflow", "wait_for_event", "action",
    ]  # fmt: skip
    assert exported["steps"][0]["cfg"] == document["steps"][0]["cfg"]
    again = copy.deepcopy(exported)
    again["name"] = "Leads in bulk (copy)"
    copied = await import_document(api_client, again)
    assert copied.status_code == 201, copied.text
    reexported = (await api_client.get(f"/api/v1/workflows/{copied.json()['id']}/export")).json()
    assert {**reexported, "name": exported["name"]} == exported
    # A new draft keeps the options; PUT .../options replaces them.
    draft = (await api_client.post(f"/api/v1/workflows/{workflow_id}/versions")).json()
    assert draft["options"]["concurrency"]["limit"] == 2
    url = f"/api/v1/workflows/{workflow_id}/versions/{draft['version_num']}/options"
    replaced = await api_client.put(url, json={"concurrency": {"limit": 1}})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["options"] == {
        "concurrency": {"limit": 1, "key": None, "overflow": "queue"}
    }
    refused = await api_client.put(url, json={"concurrency": {"limit": 0}})
    assert refused.status_code in (400, 422), refused.text


async def test_publish_refuses_unknown_and_unpublished_workflows(
    api_client: httpx.AsyncClient,
) -> None:
    draft_only = await import_document(api_client, {**CHILD, "name": "Draft only"}, publish=False)
    assert draft_only.status_code == 201
    document = parent(on_failure={"workflow": "No such workflow"})
    document["steps"][1]["cfg"]["workflow"] = "Draft only"
    problems = fields(await import_document(api_client, document))
    assert "no workflow has the id or name 'Process lead'" in problems["steps[each].cfg.workflow"]
    assert "no published version" in problems["steps[one].cfg.workflow"]
    assert "No such workflow" in problems["on_failure.workflow"]


async def test_publish_refuses_a_workflow_that_calls_itself_directly_or_through_others(
    api_client: httpx.AsyncClient,
) -> None:
    selfish = {
        "name": "Selfish",
        "steps": [{"key": "again", "kind": "call_workflow", "cfg": {"workflow": "Selfish"}}],
    }
    assert (
        "cannot call itself"
        in fields(await import_document(api_client, selfish))["steps[again].cfg.workflow"]
    )
    first = {"name": "A", "steps": [{"key": "leaf", "kind": "action",
                                     "action_key": "set_variables", "cfg": {"values": {}}}]}  # fmt: skip
    created = await import_document(api_client, first)
    a_id = created.json()["id"]
    b = {
        "name": "B",
        "steps": [{"key": "call_a", "kind": "call_workflow", "cfg": {"workflow": "A"}}],
    }
    assert (await import_document(api_client, b)).status_code == 201
    a_calls_b = {"name": "A", "steps": [{"key": "call_b", "kind": "call_workflow",
                                        "cfg": {"workflow": "B"}}]}  # fmt: skip
    response = await api_client.put(
        f"/api/v1/workflows/{a_id}/document", params={"publish": "true"}, json=a_calls_b
    )
    assert "'A' -> 'B' -> 'A'" in fields(response)["steps"]


async def test_publish_refuses_bad_flow_settings_naming_each_field(
    api_client: httpx.AsyncClient,
) -> None:
    assert (await import_document(api_client, CHILD)).status_code == 201
    document = parent()
    document["steps"][0]["cfg"]["items"] = "leads"
    document["steps"][0]["cfg"]["max_concurrency"] = 0
    document["steps"][2]["cfg"].pop("timeout_seconds")
    document["concurrency"] = {"limit": 1, "key": "{{ steps.each.output }}"}
    problems = fields(await import_document(api_client, document))
    assert "steps[each].cfg.max_concurrency" in problems
    timeout_edge = next(field for field in problems if "(approval -> late)" in field)
    assert "has no timeout" in problems[timeout_edge]
    assert "not steps" in problems["concurrency.key"]
    document["steps"][0]["cfg"]["max_concurrency"] = 5
    problems = fields(await import_document(api_client, document))
    assert "a literal string is not a list" in problems["steps[each].cfg.items"]


async def test_the_registry_describes_every_step_kind(api_client: httpx.AsyncClient) -> None:
    kinds = {
        entry["kind"]: entry
        for entry in (await api_client.get("/api/v1/registry/step-kinds")).json()["items"]
    }
    assert set(kinds) == {
        "action", "condition", "delay", "call_workflow", "foreach", "wait_for_event",
    }  # fmt: skip
    assert "timeout" in kinds["wait_for_event"]["branches"]
    foreach = kinds["foreach"]["cfg_schema"]["$defs"]["ForeachCfg"]
    assert foreach["properties"]["max_concurrency"]["maximum"] == 1000
    assert set(foreach["required"]) == {"items", "workflow"}
    schema = (await api_client.get("/schema/openapi.json")).json()
    assert "/api/v1/registry/step-kinds" in schema["paths"]
    kind_enum = str(schema["components"]["schemas"])
    assert "wait_for_event" in kind_enum
    assert "call_workflow" in kind_enum
