"""The audit log through the API: each controller's state-changing call appends one entry
naming the token, its role, the action, the target and a summary with no secret; refused calls
append none; `GET /api/v1/audit` filters by target, token and time, page by page (admin only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from config.settings import Role, Settings
from server.app import create_app
from server.db.pool import asyncpg_pool
from server.queue import client as queue
from server.queue.jobs import NewJob
from tests.api.test_tasks import create_task
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN

SECRET_VALUE = "variable-secret-0123456789"
PASSWORD = "credential-password-0123456789"
HOOK_SECRET = "hook-secret-0123456789abcdef"
DOCUMENT = {
    "name": "Audited leads",
    "steps": [
        {
            "key": "shape",
            "kind": "action",
            "action_key": "transform",
            "cfg": {"output": {"name": "{{ trigger.name }}"}},
        }
    ],
    "subscriptions": [{"trigger_key": "leads", "filter_conditions": {}}],
}


@pytest.fixture
async def app_and_client(
    settings_for: Callable[..., Settings],
) -> AsyncIterator[tuple[Litestar, httpx.AsyncClient]]:
    app = create_app(settings_for(roles=frozenset({Role.API})))
    async with serving(app, token=API_TOKEN) as client:
        yield app, client


async def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 300, response.text
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def entries(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": "50", **({"cursor": cursor} if cursor else {})}
        page = await ok(await client.get("/api/v1/audit", params=query))
        found.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def bury_a_job(app: Litestar) -> int:
    async with asyncpg_pool(app.state.database).acquire() as connection:
        await queue.enqueue_jobs(connection, [NewJob(kind="audited")])
        [job] = await queue.claim_jobs(connection, worker_id="w", limit=1, lease_seconds=30)
        await queue.mark_job_dead(connection, job.lease, error="failed")
    return job.id


async def test_each_controllers_state_changing_call_appends_its_audit_entry(
    app_and_client: tuple[Litestar, httpx.AsyncClient], connection: asyncpg.Connection
) -> None:
    app, client = app_and_client
    api = "/api/v1"
    await ok(
        await client.post(
            f"{api}/registry/triggers", json={"trigger_key": "leads", "type": "event"}
        )
    )
    imported = await ok(
        await client.post(f"{api}/workflows/import", params={"publish": "true"}, json=DOCUMENT)
    )
    workflow = imported["id"]
    created = await ok(await client.post(f"{api}/workflows", json={"name": "Second"}))
    await ok(await client.patch(f"{api}/workflows/{created['id']}", json={"description": "d"}))
    draft = await ok(await client.post(f"{api}/workflows/{created['id']}/versions", json={}))
    step = await ok(await client.post(
        f"{api}/workflows/{created['id']}/versions/{draft['version_num']}/steps",
        json={"key": "wait", "kind": "delay", "cfg": {"seconds": 5}},
    ))  # fmt: skip
    await ok(await client.post(
        f"{api}/workflows/{created['id']}/subscriptions",
        json={"trigger_key": "leads", "filter_conditions": {}},
    ))  # fmt: skip
    await ok(await client.post(
        f"{api}/workflows/{created['id']}/variables",
        json={"key": "apikey", "value": SECRET_VALUE, "secret": True},
    ))  # fmt: skip
    credential = await ok(await client.post(f"{api}/credentials", json={
        "name": "mail", "type": "smtp",
        "data": {"host": "smtp.example.com", "port": 587, "username": "ops", "password": PASSWORD},
    }))  # fmt: skip
    webhook = await ok(await client.post(f"{api}/webhooks", json={
        "trigger_key": "hooked", "path": "audited", "auth": {"type": "header_token", "secret": HOOK_SECRET},
    }))  # fmt: skip
    schedule = await ok(
        await client.post(f"{api}/schedules", json={"trigger_key": "nightly", "cron": "0 3 * * *"})
    )
    made = await ok(await client.post(f"{api}/tokens", json={"name": "ops", "role": "operator"}))
    operator = {"Authorization": f"Bearer {made['token']}", "X-Request-ID": "ops-request-1"}
    ran = await client.post(
        f"{api}/workflows/{workflow}/run", json={"input": {"name": "Ann"}}, headers=operator
    )
    execution = (await ok(ran))["execution_id"]
    assert ran.headers["x-request-id"] == "ops-request-1"
    await ok(await client.post(f"{api}/executions/{execution}/cancel", headers=operator))
    sent = await ok(
        await client.post(
            f"{api}/events",
            json={"trigger_key": "leads", "payload": {"name": "Bo"}},
            headers=operator,
        )
    )
    replayed = await ok(
        await client.post(f"{api}/events/{sent['event_id']}/replay", headers=operator)
    )
    job_id = await bury_a_job(app)
    await ok(await client.post(f"{api}/jobs/{job_id}/requeue", headers=operator))
    task_id = await create_task(connection)
    await ok(
        await client.patch(f"{api}/tasks/{task_id}", json={"status": "done"}, headers=operator)
    )
    await ok(await client.delete(f"{api}/tokens/{made['id']}"))

    log = await entries(client)
    by_action = {entry["action"]: entry for entry in log}
    expected_targets = {
        "trigger.register": ("trigger", "leads"),
        "workflow.import": ("workflow", workflow),
        "workflow.create": ("workflow", created["id"]),
        "workflow.update": ("workflow", created["id"]),
        "version.create": ("version", draft["id"]),
        "step.create": ("step", step["id"]),
        "subscription.create": ("subscription", None),
        "variable.write": ("variable", f"{created['id']}/apikey"),
        "credential.create": ("credential", credential["id"]),
        "webhook.create": ("webhook", webhook["id"]),
        "schedule.create": ("schedule", schedule["id"]),
        "token.create": ("token", made["id"]),
        "execution.run": ("execution", execution),
        "execution.cancel": ("execution", execution),
        "event.send": ("event", sent["event_id"]),
        "event.replay": ("event", sent["event_id"]),
        "job.requeue": ("job", str(job_id)),
        "task.update": ("task", task_id),
        "token.revoke": ("token", made["id"]),
    }
    assert set(by_action) == set(expected_targets)
    assert len(log) == len(expected_targets)
    for action, (target_type, target_id) in expected_targets.items():
        entry = by_action[action]
        assert entry["target_type"] == target_type, action
        if target_id is not None:
            assert entry["target_id"] == target_id, action
        assert entry["source"] == "127.0.0.1", action
        assert entry["request_id"], action
    admin_entry = by_action["workflow.create"]
    assert (admin_entry["token_id"], admin_entry["token_name"], admin_entry["role"]) == (
        None, "API_TOKENS #1", "admin",
    )  # fmt: skip
    assert admin_entry["summary"]["body"] == {"name": "Second"}
    run_entry = by_action["execution.run"]
    assert (run_entry["token_id"], run_entry["token_name"], run_entry["role"]) == (
        made["id"], "ops", "operator",
    )  # fmt: skip
    assert run_entry["request_id"] == "ops-request-1"
    assert run_entry["summary"]["body"] == {"input": "[withheld]"}
    assert by_action["event.replay"]["summary"]["result"]["event_id"] == replayed["event_id"]
    assert by_action["token.create"]["summary"]["body"] == {"name": "ops", "role": "operator"}
    assert by_action["variable.write"]["summary"]["body"]["value"] == "[withheld]"
    text = str(log)
    for secret in (SECRET_VALUE, PASSWORD, HOOK_SECRET, made["token"]):
        assert secret not in text
    async with asyncpg_pool(app.state.database).acquire() as database:
        stored = await database.fetchval("SELECT string_agg(summary::text, ' ') FROM audit_log")
    for secret in (SECRET_VALUE, PASSWORD, HOOK_SECRET, made["token"]):
        assert secret not in stored


async def test_refused_calls_append_nothing_and_only_admins_read_the_log(
    app_and_client: tuple[Litestar, httpx.AsyncClient],
) -> None:
    _, client = app_and_client
    viewer = await ok(await client.post("/api/v1/tokens", json={"name": "v", "role": "viewer"}))
    headers = {"Authorization": f"Bearer {viewer['token']}"}
    refused = await client.post("/api/v1/workflows", json={"name": "no"}, headers=headers)
    assert refused.status_code == 403
    invalid = await client.post("/api/v1/workflows", json={"name": ""})
    assert invalid.status_code == 400
    missing = await client.post(f"/api/v1/executions/{viewer['id']}/cancel")
    assert missing.status_code == 404
    assert [entry["action"] for entry in await entries(client)] == ["token.create"]
    assert (await client.get("/api/v1/audit", headers=headers)).status_code == 403


async def test_the_log_is_filtered_by_target_token_and_time_page_by_page(
    app_and_client: tuple[Litestar, httpx.AsyncClient],
) -> None:
    _, client = app_and_client
    editor = await ok(
        await client.post("/api/v1/tokens", json={"name": "designer", "role": "editor"})
    )
    headers = {"Authorization": f"Bearer {editor['token']}"}
    first = await ok(await client.post("/api/v1/workflows", json={"name": "one"}, headers=headers))
    await asyncio.sleep(0.01)
    middle = dt.datetime.now(dt.UTC)
    for n in range(3):
        await ok(
            await client.patch(
                f"/api/v1/workflows/{first['id']}", json={"description": str(n)}, headers=headers
            )
        )
    await ok(await client.post("/api/v1/workflows", json={"name": "two"}))
    of_first = await entries(client, target=first["id"])
    assert [e["action"] for e in of_first] == ["workflow.update"] * 3 + ["workflow.create"]
    assert [e["summary"]["body"]["description"] for e in of_first[:3]] == ["2", "1", "0"]
    assert len(await entries(client, target=f"workflow:{first['id']}")) == 4
    assert len(await entries(client, target=f"token:{first['id']}")) == 0
    assert len(await entries(client, target="workflow:")) == 5
    assert len(await entries(client, token=editor["id"])) == 4
    assert len(await entries(client, token="designer")) == 4
    assert len(await entries(client, token="API_TOKENS #1")) == 2  # the editor token, "two"
    since = await entries(client, since=middle.isoformat())
    assert [e["action"] for e in since] == ["workflow.create"] + ["workflow.update"] * 3
    page = await ok(await client.get("/api/v1/audit", params={"limit": "2"}))
    assert len(page["items"]) == 2
    rest = await ok(await client.get("/api/v1/audit", params={"cursor": page["next_cursor"]}))
    assert len(rest["items"]) == 4
    assert not {e["id"] for e in page["items"]} & {e["id"] for e in rest["items"]}
    bad = await client.get("/api/v1/audit", params={"cursor": "junk"})
    assert bad.status_code == 400
