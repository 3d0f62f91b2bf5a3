"""Failures are loud: a failed step or execution is logged at warning/error with the error
text, the workflow's id and name, the execution id and the step key; API refusals are logged
with their route and problem type; /metrics carries no `_created` samples."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx
from structlog.testing import capture_logs

from tests.support.peers import HttpPeer
from tests.support.workflows import import_published, run, wait_for

SECRET = "sk-live-loud-failure-4b1d"


def _events(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_a_failed_step_and_execution_are_logged_with_error_workflow_and_step(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    http_peer.reply("/down", 503)
    document = {
        "name": "Loud failure",
        "variables": [{"key": "token", "value": SECRET, "secret": True}],
        "steps": [
            {
                "key": "call",
                "kind": "action",
                "action_key": "http_request",
                "cfg": {
                    "url": f"{http_peer.base_url}/down?key={{{{ vars.token }}}}",
                    "retry": {"max_attempts": 2, "backoff_seconds": 0.05},
                },
            }
        ],
    }
    workflow_id = await import_published(engine_client, document)
    with capture_logs() as logs:
        execution_id = await run(engine_client, workflow_id)
        execution = await wait_for(engine_client, execution_id)
    assert execution["status"] == "FAILED"
    expected = {
        "workflow_id": workflow_id,
        "workflow_name": "Loud failure",
        "execution_id": execution_id,
        "step_key": "call",
    }
    [attempt] = _events(logs, "step_attempt_failed")
    assert attempt["log_level"] == "warning"
    assert expected.items() <= attempt.items()
    assert "503" in attempt["error"]
    [step] = _events(logs, "step_failed")
    assert step["log_level"] == "warning"
    assert expected.items() <= step.items()
    assert "503" in step["error"]
    assert step["attempts"] == 2
    [failed] = _events(logs, "execution_failed")
    assert failed["log_level"] == "error"
    assert {k: v for k, v in expected.items() if k != "step_key"}.items() <= failed.items()
    assert "'call' failed" in failed["error"]
    assert "503" in failed["error"]
    assert SECRET not in str(logs)


async def test_api_refusals_are_logged_with_route_and_problem_type(
    engine_client: httpx.AsyncClient,
) -> None:
    with capture_logs() as logs:
        missing = await engine_client.get(
            "/api/v1/workflows/00000000-0000-4000-8000-000000000000/export"
        )
        anonymous = await engine_client.get(
            "/api/v1/workflows", headers={"Authorization": "Bearer not-a-token"}
        )
    assert (missing.status_code, anonymous.status_code) == (404, 401)
    refused = _events(logs, "request_refused")
    assert [(entry["status"], entry["log_level"]) for entry in refused] == [
        (404, "warning"),
        (401, "warning"),
    ]
    assert refused[0]["route"] == "/api/v1/workflows/{workflow_id}/export"
    assert refused[0]["problem_type"] == "https://switchyard.dev/problems/not-found"
    assert refused[0]["method"] == "GET"
    assert refused[1]["route"] == "/api/v1/workflows"
    assert refused[1]["problem_type"] == "https://switchyard.dev/problems/unauthorized"
    assert "not-a-token" not in str(logs)


async def test_metrics_carry_no_created_samples(engine_client: httpx.AsyncClient) -> None:
    body = (await engine_client.get("/metrics")).text
    assert "switchyard_" in body
    assert "_created" not in body
