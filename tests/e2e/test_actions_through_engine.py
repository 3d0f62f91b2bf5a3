"""Every built-in action in a real run: an API and a worker, real loopback peers, and for each
the execution's status, the step's recorded output and the exact number of effects the peer saw.

A step whose effect the peer accepted must succeed once: nothing after the effect (recording
its output, closing the connection) may fail the attempt and make a retry repeat it.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from tests.support.broken_peers import BrokenAnswerPeer
from tests.support.peers import HttpPeer, SmtpPeer
from tests.support.workflows import import_published, run, steps_by_key, wait_for

# Retries on, and quick: a step that failed after its effect would repeat it within the test.
RETRY: dict[str, Any] = {"max_attempts": 3, "backoff_seconds": 0.05}
MESSAGES_PATH = "/2010-04-01/Accounts/AC123/Messages.json"


def action(key: str, action_key: str, **cfg: Any) -> dict[str, Any]:
    return {
        "key": key,
        "kind": "action",
        "action_key": action_key,
        "cfg": {**cfg, "retry": RETRY},
    }


async def credential(client: httpx.AsyncClient, name: str, kind: str, data: Any) -> None:
    body = {"name": name, "type": kind, "data": data}
    response = await client.post("/api/v1/credentials", json=body)
    assert response.status_code == 201, response.text


async def smtp_credential(client: httpx.AsyncClient, peer: SmtpPeer) -> None:
    await credential(
        client, "mail", "smtp", {"host": peer.host, "port": peer.port, "security": "none"}
    )


async def run_one(client: httpx.AsyncClient, *steps: dict[str, Any]) -> dict[str, Any]:
    """Import a workflow of `steps` in a chain, run it, wait until it ends."""
    edges = [{"from": a["key"], "to": b["key"]} for a, b in itertools.pairwise(steps)]
    document = {"name": f"Run {steps[0]['key']}", "steps": list(steps), "edges": edges}
    workflow_id = await import_published(client, document)
    return await wait_for(client, await run(client, workflow_id))


async def test_an_email_step_sends_one_message_when_an_event_starts_it(
    engine_client: httpx.AsyncClient, smtp_server: SmtpPeer
) -> None:
    await smtp_credential(engine_client, smtp_server)
    registered = await engine_client.post(
        "/api/v1/registry/triggers", json={"trigger_key": "signup", "type": "event"}
    )
    assert registered.status_code == 201, registered.text
    mail = action(
        "mail", "email", credential="mail", to="{{ trigger.email }}", subject="Hi", text="Welcome"
    )
    document = {
        "name": "Welcome mail",
        "steps": [mail],
        "subscriptions": [{"trigger_key": "signup"}],
    }
    await import_published(engine_client, document)
    sent = await engine_client.post(
        "/api/v1/events", json={"trigger_key": "signup", "payload": {"email": "ann@example.com"}}
    )
    assert sent.status_code == 202, sent.text
    [execution_id] = sent.json()["execution_ids"]
    execution = await wait_for(engine_client, execution_id)
    assert execution["status"] == "SUCCESS", execution
    [received] = smtp_server.mailbox.mails
    step = steps_by_key(execution)["mail"]
    assert step["attempts"] == 1
    assert step["result_data"] == {
        "message_id": received.message["Message-ID"],
        "accepted": ["ann@example.com"],
        "refused": [],
    }


async def test_an_email_the_server_accepted_is_not_sent_again_when_closing_fails(
    engine_client: httpx.AsyncClient, smtp_quit_refusing_server: SmtpPeer
) -> None:
    await smtp_credential(engine_client, smtp_quit_refusing_server)
    execution = await run_one(
        engine_client,
        action("mail", "email", credential="mail", to="ann@example.com", subject="S", text="x"),
    )
    assert execution["status"] == "SUCCESS", execution
    assert len(smtp_quit_refusing_server.mailbox.mails) == 1
    step = steps_by_key(execution)["mail"]
    assert (step["attempts"], step["result_data"]["accepted"]) == (1, ["ann@example.com"])


async def test_an_sms_step_posts_one_message(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    http_peer.reply(MESSAGES_PATH, status=201, json={"sid": "SM1", "status": "queued"})
    account = {"api_key": "key-1", "account_id": "AC123", "base_url": http_peer.base_url}
    await credential(engine_client, "twilio", "api_key", account)
    execution = await run_one(
        engine_client,
        action(
            "text", "sms", credential="twilio", to="+15550002", body="Hello", **{"from": "+1555"}
        ),
    )
    assert execution["status"] == "SUCCESS", execution
    step = steps_by_key(execution)["text"]
    assert (step["attempts"], step["result_data"]) == (1, {"sid": "SM1", "status": "queued"})
    [request] = http_peer.requests_to(MESSAGES_PATH)
    assert request.form() == {"To": "+15550002", "From": "+1555", "Body": "Hello"}
    assert request.headers["idempotency-key"]


async def test_an_http_request_step_calls_once_and_records_the_answer(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    http_peer.reply("/orders", status=201, json={"order": 7})
    execution = await run_one(
        engine_client,
        action(
            "call", "http_request", method="POST", url=f"{http_peer.base_url}/orders", json={"n": 1}
        ),
    )
    assert execution["status"] == "SUCCESS", execution
    step = steps_by_key(execution)["call"]
    assert step["attempts"] == 1
    assert (step["result_data"]["status"], step["result_data"]["body"]) == (201, {"order": 7})
    assert step["result_data"]["headers"]["content-type"] == "application/json"
    [request] = http_peer.requests_to("/orders")
    assert (request.method, request.json()) == ("POST", {"n": 1})


async def test_a_task_management_step_creates_one_task(engine_client: httpx.AsyncClient) -> None:
    execution = await run_one(
        engine_client,
        action("task", "task_management", operation="create", title="Call Ann", assignee="bob"),
    )
    assert execution["status"] == "SUCCESS", execution
    step = steps_by_key(execution)["task"]
    tasks = (
        await engine_client.get("/api/v1/tasks", params={"execution_id": execution["id"]})
    ).json()["items"]
    [task] = tasks
    assert step["attempts"] == 1
    assert (task["id"], task["title"], task["assignee"]) == (
        step["result_data"]["id"],
        "Call Ann",
        "bob",
    )
    assert step["result_data"]["status"] == task["status"] == "open"


async def test_set_variables_and_transform_hand_their_values_to_the_next_step(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    http_peer.reply("/report", json={"ok": True})
    execution = await run_one(
        engine_client,
        action("vars", "set_variables", values={"customer": "Ann", "total": 3}),
        action(
            "shape",
            "transform",
            output={"line": "{{ steps.vars.output.customer }} x{{ steps.vars.output.total }}"},
        ),
        action(
            "report",
            "http_request",
            method="POST",
            url=f"{http_peer.base_url}/report",
            json="{{ steps.shape.output }}",
        ),
    )
    assert execution["status"] == "SUCCESS", execution
    steps = steps_by_key(execution)
    assert steps["vars"]["result_data"] == {"customer": "Ann", "total": 3}
    assert steps["shape"]["result_data"] == {"line": "Ann x3"}
    assert [step["attempts"] for step in steps.values()] == [1, 1, 1]
    [request] = http_peer.requests_to("/report")
    assert request.json() == {"line": "Ann x3"}


async def test_a_secret_header_stays_with_its_origin_when_a_redirect_leaves_it(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer, other_http_peer: HttpPeer
) -> None:
    secret = "tok-5d1e8a2f-secret"
    http_peer.reply("/hook", status=307, headers={"Location": f"{other_http_peer.base_url}/in"})
    other_http_peer.reply("/in", json={"ok": True})
    step = action(
        "call",
        "http_request",
        method="POST",
        url=f"{http_peer.base_url}/hook",
        headers={"X-Api-Token": "{{ vars.secret }}", "Accept": "application/json"},
        json={"n": 1},
    )
    document = {
        "name": "Redirected",
        "steps": [step],
        "variables": [{"key": "secret", "value": secret, "secret": True}],
    }
    workflow_id = await import_published(engine_client, document)
    execution = await wait_for(engine_client, await run(engine_client, workflow_id))
    assert execution["status"] == "SUCCESS", execution
    assert steps_by_key(execution)["call"]["result_data"]["body"] == {"ok": True}
    [first] = http_peer.requests
    [second] = other_http_peer.requests
    assert first.headers["x-api-token"] == secret
    assert "x-api-token" not in second.headers
    assert (second.headers["accept"], second.json()) == ("application/json", {"n": 1})


async def test_a_post_the_peer_accepted_is_not_sent_again_when_its_answer_breaks_off(
    engine_client: httpx.AsyncClient, broken_answer_peer: BrokenAnswerPeer, http_peer: HttpPeer
) -> None:
    account = {"api_key": "key-1", "account_id": "AC123", "base_url": broken_answer_peer.base_url}
    await credential(engine_client, "twilio", "api_key", account)
    for step in (
        action("call", "http_request", method="POST", url=f"{broken_answer_peer.base_url}/x"),
        action("text", "sms", credential="twilio", to="+1555", body="Hi", **{"from": "+1556"}),
    ):
        execution = await run_one(engine_client, step)
        assert execution["status"] == "FAILED", execution
        recorded = steps_by_key(execution)[step["key"]]
        assert recorded["attempts"] == 1
        assert "was accepted (HTTP 201), but reading its answer failed" in recorded["error"]
    assert broken_answer_peer.requests == 2  # one each: neither was sent again
