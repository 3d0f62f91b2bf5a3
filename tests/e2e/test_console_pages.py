"""The operator console's server-rendered pages over plain HTTP (no browser needed): sign-in
and its cookie, the session guard, CSRF refusals, revocation, and each page's content, driven
through the app with a worker so runs really happen (`tests/integration/test_console_browser.py`
drives the same pages in Chromium)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.credentials import API_TOKEN
from tests.support.peers import HttpPeer
from tests.support.workflows import import_published, run, wait_for

NO_RETRY = {"max_attempts": 1}


def failing_call(url: str) -> dict[str, Any]:
    return {
        "name": "Call partner",
        "steps": [
            {"key": "prepare", "kind": "action", "action_key": "transform",
             "cfg": {"output": {"n": 1}, "retry": NO_RETRY}},
            {"key": "call", "kind": "action", "action_key": "http_request",
             "cfg": {"method": "POST", "url": url, "json": {"token": "{{ vars.key }}"},
                     "retry": NO_RETRY}},
        ],
        "edges": [{"from": "prepare", "to": "call"}],
        "variables": [{"key": "key", "value": "sk-live-7f3a9-secret", "secret": True}],
    }  # fmt: skip


@pytest.fixture
async def console(engine_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A browser-like client of the same app: no bearer header, signed in by the form."""
    transport = engine_client._transport  # the same app, in this loop
    client = httpx.AsyncClient(transport=transport, base_url="http://switchyard.test")
    response = await client.post("/console/login", data={"token": API_TOKEN})
    assert response.status_code == 303, response.text
    return client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def test_sign_in_sets_a_sealed_http_only_strict_cookie(
    engine_client: httpx.AsyncClient,
) -> None:
    client = httpx.AsyncClient(transport=engine_client._transport, base_url="http://x.test")
    form = await client.get("/console/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text
    assert '<label for="token">' in form.text
    wrong = await client.post("/console/login", data={"token": "not-a-token"})
    assert wrong.status_code == 401
    assert "not valid, revoked or expired" in wrong.text
    empty = await client.post("/console/login", data={})
    assert empty.status_code == 400
    signed = await client.post("/console/login", data={"token": API_TOKEN})
    assert signed.status_code == 303
    assert signed.headers["location"] == "/console/executions"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/console" in cookie
    assert API_TOKEN not in cookie
    assert "Secure" not in cookie
    page = await client.get("/console/executions")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_pages_without_a_session_go_to_sign_in(engine_client: httpx.AsyncClient) -> None:
    # The API's bearer header is no way into the console: only its session cookie is.
    for path in ("/console/executions", "/console/workflows", "/console/jobs/dead"):
        response = await engine_client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/login?next=/console/")
    forged = httpx.AsyncClient(
        transport=engine_client._transport,
        base_url="http://switchyard.test",
        cookies={"switchyard_console": "test.AAAA"},
    )
    assert (await forged.get("/console/triggers")).status_code == 303


async def test_a_failed_run_shows_its_failing_step_and_error_with_secrets_redacted(
    engine_client: httpx.AsyncClient, console: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    http_peer.reply("/partner", status=500, json={"error": "down"})
    workflow_id = await import_published(
        engine_client, failing_call(f"{http_peer.base_url}/partner")
    )
    execution_id = await run(engine_client, workflow_id)
    assert (await wait_for(engine_client, execution_id))["status"] == "FAILED"
    page = await console.get(f"/console/executions/{execution_id}")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'data-step-key="call" data-kind="action" data-status="FAILED"', html)
    assert re.search(r'data-step-key="prepare" data-kind="action" data-status="SUCCESS"', html)
    assert 'data-role="step-error"' in html
    assert "500" in html
    assert "sk-live-7f3a9-secret" not in html
    assert "[redacted]" in html
    listing = await console.get("/console/executions", params={"status": "FAILED"})
    assert execution_id in listing.text
    assert (
        execution_id
        not in (await console.get("/console/executions", params={"status": "SUCCESS"})).text
    )


async def test_retry_through_the_console_after_a_fix_succeeds(
    engine_client: httpx.AsyncClient, console: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    http_peer.reply("/partner", status=500)
    workflow_id = await import_published(
        engine_client, failing_call(f"{http_peer.base_url}/partner")
    )
    execution_id = await run(engine_client, workflow_id)
    await wait_for(engine_client, execution_id)
    page = await console.get(f"/console/executions/{execution_id}")
    http_peer.reply("/partner", status=200, json={"ok": True})
    retried = await console.post(
        f"/console/executions/{execution_id}/retry", data={"csrf_token": csrf_of(page.text)}
    )
    assert retried.status_code == 303
    assert (await wait_for(engine_client, execution_id))["status"] == "SUCCESS"
    after = await console.get(retried.headers["location"])
    assert "Retrying" in after.text
    assert 'data-step-key="call" data-kind="action" data-status="SUCCESS"' in after.text
    again = await console.post(
        f"/console/executions/{execution_id}/retry", data={"csrf_token": csrf_of(page.text)}
    )
    assert again.status_code == 409
    assert "only FAILED executions can be retried" in again.text


async def test_state_changing_forms_without_the_csrf_token_are_refused(
    engine_client: httpx.AsyncClient, console: httpx.AsyncClient
) -> None:
    workflow_id = await import_published(
        engine_client,
        {"name": "Wait", "steps": [{"key": "pause", "kind": "delay", "cfg": {"seconds": 600}}]},
    )
    execution_id = await run(engine_client, workflow_id)
    await wait_for(engine_client, execution_id, {"WAITING"})
    for data in ({}, {"csrf_token": "forged"}):
        refused = await console.post(f"/console/executions/{execution_id}/cancel", data=data)
        assert refused.status_code == 403
        assert "CSRF token is missing or does not match" in refused.text
    assert (await wait_for(engine_client, execution_id, {"WAITING"}))["status"] == "WAITING"
    assert (await console.post("/console/logout", data={})).status_code == 403
    cross_site = await console.post(
        "/console/login", data={"token": API_TOKEN}, headers={"Origin": "http://evil.test"}
    )
    assert cross_site.status_code == 403
    page = await console.get(f"/console/executions/{execution_id}")
    cancelled = await console.post(
        f"/console/executions/{execution_id}/cancel", data={"csrf_token": csrf_of(page.text)}
    )
    assert cancelled.status_code == 303
    assert (await wait_for(engine_client, execution_id))["status"] == "CANCELLED"


async def test_a_revoked_token_ends_its_console_session(
    engine_client: httpx.AsyncClient,
) -> None:
    created = await engine_client.post("/api/v1/tokens", json={"name": "console user"})
    assert created.status_code == 201, created.text
    token, token_id = created.json()["token"], created.json()["id"]
    client = httpx.AsyncClient(transport=engine_client._transport, base_url="http://s.test")
    assert (await client.post("/console/login", data={"token": token})).status_code == 303
    assert (await client.get("/console/workflows")).status_code == 200
    assert (await engine_client.delete(f"/api/v1/tokens/{token_id}")).status_code == 204
    ended = await client.get("/console/workflows")
    assert ended.status_code == 303
    assert ended.headers["location"].startswith("/console/login")


async def test_signing_out_ends_the_session(console: httpx.AsyncClient) -> None:
    page = await console.get("/console/executions")
    out = await console.post("/console/logout", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303
    assert out.headers["location"].endswith("signed_out=true")
    assert (await console.get("/console/executions")).status_code == 303


async def test_bad_filters_and_forms_show_a_message_not_a_500(
    engine_client: httpx.AsyncClient, console: httpx.AsyncClient
) -> None:
    bad = await console.get(
        "/console/executions",
        params={"status": "BROKEN", "created_after": "yesterday", "cursor": "%%%"},
    )
    assert bad.status_code == 400
    assert "Status must be one of the list." in bad.text
    assert "From must be a date and time" in bad.text
    assert "stale or altered" in bad.text
    workflow_id = await import_published(
        engine_client,
        {"name": "Echo", "steps": [
            {"key": "echo", "kind": "action", "action_key": "transform",
             "cfg": {"output": "{{ trigger }}"}}]},
    )  # fmt: skip
    page = await console.get(f"/console/workflows/{workflow_id}")
    assert page.status_code == 200
    assert 'data-step-key="echo" data-kind="action"' in page.text
    not_json = await console.post(
        f"/console/workflows/{workflow_id}/run",
        data={"csrf_token": csrf_of(page.text), "input": "{not json"},
    )
    assert not_json.status_code == 422
    assert "Input is not JSON" in not_json.text
    started = await console.post(
        f"/console/workflows/{workflow_id}/run",
        data={"csrf_token": csrf_of(page.text), "input": '{"name": "Ann"}'},
    )
    assert started.status_code == 303
    execution_id = started.headers["location"].split("/")[-1].split("?")[0]
    assert (await wait_for(engine_client, execution_id))["status"] == "SUCCESS"
    missing = await console.get("/console/executions/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert "not found" in missing.text
    listing = await console.get("/console/workflows")
    assert "Echo" in listing.text
    assert "PUBLISHED" in listing.text
    assert "SUCCESS" in listing.text


async def test_triggers_page_shows_health_webhook_urls_and_schedules(
    engine_client: httpx.AsyncClient, console: httpx.AsyncClient
) -> None:
    hook = await engine_client.post(
        "/api/v1/webhooks",
        json={"trigger_key": "orders", "path": "orders-in", "auth": {"type": "none"}},
    )
    assert hook.status_code == 201, hook.text
    schedule = await engine_client.post(
        "/api/v1/schedules", json={"trigger_key": "nightly", "cron": "0 3 * * *"}
    )
    assert schedule.status_code == 201, schedule.text
    page = await console.get("/console/triggers")
    assert page.status_code == 200
    assert "POST http://switchyard.test/hooks/orders-in" in page.text
    assert "<code>0 3 * * *</code>" in page.text
    assert 'data-trigger-key="orders"' in page.text


async def test_a_dead_job_is_requeued_from_the_console(
    engine_client: httpx.AsyncClient, console: httpx.AsyncClient, database_dsn: str
) -> None:
    connection = await asyncpg.connect(database_dsn)
    try:
        job_id = await connection.fetchval(
            "INSERT INTO job (kind, payload, state, attempts, max_attempts, last_error) "
            "VALUES ('console_test', '{}'::jsonb, 'dead', 1, 1, 'boom: the partner refused') "
            "RETURNING id"
        )
    finally:
        await connection.close()
    page = await console.get("/console/jobs/dead")
    assert f'data-job-id="{job_id}"' in page.text
    assert "boom: the partner refused" in page.text
    requeued = await console.post(
        f"/console/jobs/{job_id}/requeue", data={"csrf_token": csrf_of(page.text)}
    )
    assert requeued.status_code == 303
    after = await console.get(requeued.headers["location"])
    assert f"Job {job_id} is queued again." in after.text
    connection = await asyncpg.connect(database_dsn)
    try:  # the worker may have claimed it (no handler knows the kind), but it was re-queued
        assert await connection.fetchval("SELECT max_attempts FROM job WHERE id = $1", job_id) > 1
    finally:
        await connection.close()
    missing = await console.post(
        "/console/jobs/999999/requeue", data={"csrf_token": csrf_of(page.text)}
    )
    assert missing.status_code == 404
    assert "job 999999 not found" in missing.text


async def test_an_execution_links_its_parent_children_and_event(
    engine_client: httpx.AsyncClient, console: httpx.AsyncClient
) -> None:
    await import_published(
        engine_client,
        {"name": "Enrich", "steps": [
            {"key": "shape", "kind": "action", "action_key": "transform",
             "cfg": {"output": {"ok": True}}}]},
    )  # fmt: skip
    registered = await engine_client.post(
        "/api/v1/registry/triggers", json={"trigger_key": "signups", "type": "event"}
    )
    assert registered.status_code == 201, registered.text
    await import_published(
        engine_client,
        {"name": "Parent", "steps": [
            {"key": "enrich", "kind": "call_workflow", "cfg": {"workflow": "Enrich"}}],
         "subscriptions": [{"trigger_key": "signups", "filter_conditions": {}}]},
    )  # fmt: skip
    accepted = await engine_client.post(
        "/api/v1/events", json={"trigger_key": "signups", "payload": {"email": "a@b.c"}}
    )
    assert accepted.status_code == 202, accepted.text
    event_id, [parent_id] = accepted.json()["event_id"], accepted.json()["execution_ids"]
    parent = await wait_for(engine_client, parent_id)
    assert parent["status"] == "SUCCESS", parent
    page = (await console.get(f"/console/executions/{parent_id}")).text
    assert f'href="/console/events/{event_id}"' in page
    child_id = re.findall(r'data-execution-id="([0-9a-f-]+)"', page)
    assert len(child_id) == 1
    child = (await console.get(f"/console/executions/{child_id[0]}")).text
    assert f'href="/console/executions/{parent_id}"' in child
    assert "<code>enrich</code>" in child
    event = await console.get(f"/console/events/{event_id}")
    assert event.status_code == 200
    assert "a@b.c" in event.text
    assert parent_id[:8] in event.text


async def test_a_waiting_step_is_resumed_from_the_console(
    engine_client: httpx.AsyncClient, console: httpx.AsyncClient
) -> None:
    registered = await engine_client.post(
        "/api/v1/registry/triggers", json={"trigger_key": "approvals", "type": "event"}
    )
    assert registered.status_code == 201, registered.text
    workflow_id = await import_published(
        engine_client,
        {"name": "Approve", "steps": [
            {"key": "approval", "kind": "wait_for_event",
             "cfg": {"trigger_key": "approvals", "correlation_key": "order-1"}}]},
    )  # fmt: skip
    execution_id = await run(engine_client, workflow_id)
    await wait_for(engine_client, execution_id, {"WAITING"})
    page = await console.get(f"/console/executions/{execution_id}")
    action = f"/console/executions/{execution_id}/steps/approval/resume"
    assert f'action="{action}"' in page.text
    bad = await console.post(action, data={"csrf_token": csrf_of(page.text), "payload": "{oops"})
    assert bad.status_code == 422
    assert "is not JSON" in bad.text
    resumed = await console.post(
        action, data={"csrf_token": csrf_of(page.text), "payload": '{"approved": true}'}
    )
    assert resumed.status_code == 303
    execution = await wait_for(engine_client, execution_id)
    assert execution["status"] == "SUCCESS"
    assert execution["steps"][0]["result_data"] == {"approved": True}
