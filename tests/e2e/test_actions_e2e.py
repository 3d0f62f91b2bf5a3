"""Actions inside real runs: retries against a flaky peer, secrets redacted, a killed worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from structlog.testing import capture_logs

from config.settings import Settings
from tests.support.invariants import assert_invariants
from tests.support.peers import HttpPeer, RecordedRequest, Reply
from tests.support.processes import ServerProcess
from tests.support.waiting import eventually
from tests.support.workflows import import_published, run, steps_by_key, wait_for

SECRET = "sk-live-7f3a9c2e-secret"


def _call(url: str, **cfg: Any) -> dict[str, Any]:
    return {
        "key": "call",
        "kind": "action",
        "action_key": "http_request",
        "cfg": {"url": url, **cfg},
    }


async def test_a_flaky_peer_is_retried_with_backoff_until_it_answers(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    answers = iter([Reply(status=503), Reply(status=503)])
    http_peer.respond(
        "/flaky",
        lambda _: next(
            answers,
            Reply(status=200, body=b'{"ok": true}', headers={"Content-Type": "application/json"}),
        ),
    )
    step = _call(f"{http_peer.base_url}/flaky", retry={"max_attempts": 3, "backoff_seconds": 0.05})
    workflow_id = await import_published(engine_client, {"name": "Flaky", "steps": [step]})
    execution = await wait_for(engine_client, await run(engine_client, workflow_id))
    assert execution["status"] == "SUCCESS", execution
    call = steps_by_key(execution)["call"]
    assert (call["attempts"], call["result_data"]["status"], call["result_data"]["body"]) == (
        3,
        200,
        {"ok": True},
    )
    keys = {request.headers["idempotency-key"] for request in http_peer.requests_to("/flaky")}
    assert len(keys) == 1  # the same idempotency key on every attempt


async def test_retries_run_out_into_a_failed_execution(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    http_peer.reply("/down", 503)
    step = _call(f"{http_peer.base_url}/down", retry={"max_attempts": 2, "backoff_seconds": 0.05})
    workflow_id = await import_published(engine_client, {"name": "Down", "steps": [step]})
    execution = await wait_for(engine_client, await run(engine_client, workflow_id))
    assert execution["status"] == "FAILED"
    assert steps_by_key(execution)["call"]["attempts"] == 2
    assert "503" in steps_by_key(execution)["call"]["error"]


async def test_secrets_reach_the_peer_but_never_the_records_or_logs(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer, database_dsn: str
) -> None:
    http_peer.respond(
        "/echo",
        lambda request: Reply(
            status=200,
            headers={"Content-Type": "application/json"},
            body=b'{"you_sent": "' + request.headers["authorization"].encode() + b'"}',
        ),
    )
    step = _call(
        f"{http_peer.base_url}/echo",
        method="POST",
        headers={"Authorization": "Bearer {{ vars.token }}"},
    )
    document = {
        "name": "Secret",
        "steps": [step],
        "variables": [{"key": "token", "value": SECRET, "secret": True}],
    }
    workflow_id = await import_published(engine_client, document)
    with capture_logs() as logs:
        execution = await wait_for(engine_client, await run(engine_client, workflow_id))
    assert execution["status"] == "SUCCESS"
    assert http_peer.requests_to("/echo")[0].headers["authorization"] == f"Bearer {SECRET}"
    call = steps_by_key(execution)["call"]
    assert call["input_data"]["headers"]["Authorization"] == "[redacted]"  # read a secret
    assert call["result_data"]["body"] == {"you_sent": "[redacted]"}  # the rendered header, whole
    assert SECRET not in str(logs)
    connection = await asyncpg.connect(database_dsn)
    try:
        stored = await connection.fetchval("SELECT string_agg(t::text, '') FROM step_execution t")
        exported = (await engine_client.get(f"/api/v1/workflows/{workflow_id}/export")).text
    finally:
        await connection.close()
    assert SECRET not in stored
    assert SECRET not in exported


async def test_a_worker_killed_mid_step_loses_nothing_and_makes_one_task(
    api_only: httpx.AsyncClient,
    api_settings: Settings,
    start_worker: Callable[[], ServerProcess],
    http_peer: HttpPeer,
) -> None:
    release = threading.Event()
    first_call = threading.Event()

    def slow_then_fast(request: RecordedRequest) -> Reply:
        if not first_call.is_set():
            first_call.set()
            release.wait(timeout=30)  # the first attempt hangs until its worker is dead
        return Reply(status=200, body=b"{}", headers={"Content-Type": "application/json"})

    http_peer.respond("/slow", slow_then_fast)
    document = {
        "name": "Crash",
        "steps": [
            _call(f"{http_peer.base_url}/slow", timeout_seconds=30),
            {
                "key": "task",
                "kind": "action",
                "action_key": "task_management",
                "cfg": {"operation": "create", "title": "once"},
            },
        ],
        "edges": [{"from": "call", "to": "task"}],
    }
    worker = await asyncio.to_thread(start_worker)
    workflow_id = await import_published(api_only, document)
    execution_id = await run(api_only, workflow_id)
    await eventually(first_call.is_set, what="the step's first call", within=15)
    worker.process.kill()
    worker.process.wait()
    release.set()
    await asyncio.to_thread(start_worker)
    execution = await wait_for(api_only, execution_id)
    assert execution["status"] == "SUCCESS", execution
    assert steps_by_key(execution)["call"]["attempts"] == 2  # re-run after the lease expired
    tasks = await api_client_tasks(api_only, execution_id)
    assert [task["title"] for task in tasks] == ["once"]
    await assert_invariants(api_settings)


async def api_client_tasks(client: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await client.get("/api/v1/tasks", params={"execution_id": execution_id})
    ).json()["items"]
    return items
