"""The console under token roles: a viewer's session reads every page but its actions are
refused (403, saying which role is needed); an operator's session acts, and each action is in
the audit log under that token, as the same action through the REST API would be."""

from __future__ import annotations

import httpx

from tests.e2e.test_console_pages import csrf_of
from tests.support.workflows import import_published

DOCUMENT = {
    "name": "Console roles",
    "steps": [{"key": "pause", "kind": "delay", "cfg": {"seconds": 3600}}],
}


async def signed_in(api: httpx.AsyncClient, role: str) -> httpx.AsyncClient:
    made = await api.post("/api/v1/tokens", json={"name": f"{role} person", "role": role})
    assert made.status_code == 201, made.text
    browser = httpx.AsyncClient(transport=api._transport, base_url="http://switchyard.test")
    response = await browser.post("/console/login", data={"token": made.json()["token"]})
    assert response.status_code == 303, response.text
    return browser


async def test_a_viewer_reads_the_console_and_an_operators_actions_are_audited(
    api_only: httpx.AsyncClient,
) -> None:
    workflow_id = await import_published(api_only, DOCUMENT)
    viewer = await signed_in(api_only, "viewer")
    page = await viewer.get(f"/console/workflows/{workflow_id}")
    assert page.status_code == 200
    refused = await viewer.post(
        f"/console/workflows/{workflow_id}/run",
        data={"csrf_token": csrf_of(page.text), "input": "{}"},
    )
    assert refused.status_code == 403
    assert "role (viewer)" in refused.text
    assert "text/html" in refused.headers["content-type"]

    operator = await signed_in(api_only, "operator")
    page = await operator.get(f"/console/workflows/{workflow_id}")
    started = await operator.post(
        f"/console/workflows/{workflow_id}/run",
        data={"csrf_token": csrf_of(page.text), "input": '{"n": 1}'},
    )
    assert started.status_code == 303, started.text
    execution_id = started.headers["location"].split("/")[-1].split("?")[0]
    page = await operator.get(f"/console/executions/{execution_id}")
    cancelled = await operator.post(
        f"/console/executions/{execution_id}/cancel", data={"csrf_token": csrf_of(page.text)}
    )
    assert cancelled.status_code == 303, cancelled.text

    log = (await api_only.get("/api/v1/audit", params={"target": execution_id})).json()["items"]
    assert [(e["action"], e["token_name"], e["role"]) for e in log] == [
        ("execution.cancel", "operator person", "operator"),
        ("execution.run", "operator person", "operator"),
    ]
    assert all("csrf" not in str(entry["summary"]) for entry in log)
    assert not [
        e for e in (await api_only.get("/api/v1/audit")).json()["items"] if e["role"] == "viewer"
    ]
