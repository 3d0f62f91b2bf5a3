"""Inbound webhooks, authentication: each mode with valid, wrong, stale and replayed requests."""

from __future__ import annotations

import time
from typing import Any

import httpx
from structlog.testing import capture_logs

from server.db.tables import TriggerEvent
from tests.support.hook_senders import create_webhook, github_headers, standard_headers
from tests.support.workflows import import_published, wait_for

BODY = b'{"total": 42}'
TOKEN = "a-header-token-of-some-length"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEXT_WHSEC = "whsec_" + "B" * 43 + "="


def echo_workflow(trigger_key: str = "orders") -> dict[str, Any]:
    return {
        "name": f"Echo {trigger_key}",
        "steps": [
            {
                "key": "echo",
                "kind": "action",
                "action_key": "transform",
                "cfg": {"output": {"total": "{{ trigger.total }}"}},
            }
        ],
        "subscriptions": [{"trigger_key": trigger_key}],
    }


async def executions(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get("/api/v1/executions")).json()["items"]
    return items


async def health(client: httpx.AsyncClient, trigger_key: str = "orders") -> dict[str, Any]:
    triggers = (await client.get("/api/v1/registry/triggers")).json()["items"]
    found: dict[str, Any] = {t["trigger_key"]: t["health"] for t in triggers}[trigger_key]
    return found


async def _hook(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes = BODY, path: str = "orders"
) -> httpx.Response:
    return await client.post(f"/hooks/{path}", content=body, headers=headers)


async def test_standard_webhooks_valid_wrong_stale_and_replayed(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, auth={"type": "hmac_sha256", "secret": WHSEC})
    await import_published(engine_client, echo_workflow())
    valid = standard_headers(WHSEC, BODY, message_id="msg_1")
    first = await _hook(engine_client, valid)
    assert first.status_code == 202, first.text
    body = first.json()
    assert (body["duplicate"], body["outcome"], len(body["execution_ids"])) == (
        False,
        "accepted",
        1,
    )
    execution = await wait_for(engine_client, body["execution_ids"][0])
    assert execution["status"] == "SUCCESS"
    assert execution["trigger_type"] == "webhook"
    assert execution["steps"][0]["result_data"] == {"total": 42}

    replay = await _hook(engine_client, valid)
    assert replay.status_code == 200
    assert replay.json() == {**body, "duplicate": True, "outcome": "deduplicated"}

    wrong = standard_headers("whsec_" + "C" * 43 + "=", BODY, message_id="msg_2")
    stale = standard_headers(WHSEC, BODY, message_id="msg_3", timestamp=int(time.time()) - 400)
    tampered = await _hook(engine_client, valid, BODY.replace(b"42", b"43"))
    missing = await _hook(engine_client, {"content-type": "application/json"})
    refused = [await _hook(engine_client, h) for h in (wrong, stale)] + [tampered, missing]
    assert {r.status_code for r in refused} == {401}
    assert len({r.text for r in refused}) == 1  # one body, whatever the reason
    assert len(await executions(engine_client)) == 1
    counted = await health(engine_client)
    assert (counted["accepted"], counted["deduplicated"], counted["refused"]) == (1, 1, 4)
    # The last refusal awaited was the stale one; its reason is kept for operators.
    assert (
        counted["last_error"]
        == "webhook orders: webhook-timestamp is too old (more than 5 minutes)"
    )


async def test_a_rotated_standard_secret_and_its_predecessor_are_both_accepted(
    engine_client: httpx.AsyncClient,
) -> None:
    created = await create_webhook(engine_client, auth={"type": "hmac_sha256", "secret": WHSEC})
    url = f"/api/v1/webhooks/{created['id']}"
    await engine_client.patch(url, json={"auth": {"secret": NEXT_WHSEC}})
    old = await _hook(engine_client, standard_headers(WHSEC, BODY))
    new = await _hook(engine_client, standard_headers(NEXT_WHSEC, BODY))
    assert (old.status_code, new.status_code) == (202, 202)
    await engine_client.patch(url, json={"auth": {"drop_previous_secret": True}})
    assert (await _hook(engine_client, standard_headers(WHSEC, BODY))).status_code == 401
    assert (await _hook(engine_client, standard_headers(NEXT_WHSEC, BODY))).status_code == 202


async def test_github_valid_wrong_and_replayed(engine_client: httpx.AsyncClient) -> None:
    created = await create_webhook(engine_client, auth={"type": "github", "secret": TOKEN})
    await import_published(engine_client, echo_workflow())
    valid = github_headers(TOKEN, BODY, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    first = await _hook(engine_client, valid)
    assert first.status_code == 202, first.text
    replay = await _hook(engine_client, valid)
    assert (replay.status_code, replay.json()["event_id"]) == (200, first.json()["event_id"])
    assert (await _hook(engine_client, github_headers("not-the-secret", BODY))).status_code == 401
    assert (await _hook(engine_client, github_headers(TOKEN, b"{}"), BODY)).status_code == 401
    await engine_client.patch(
        f"/api/v1/webhooks/{created['id']}", json={"auth": {"secret": "rotated-github-secret"}}
    )
    for secret in (TOKEN, "rotated-github-secret"):
        assert (await _hook(engine_client, github_headers(secret, BODY))).status_code == 202
    events = await TriggerEvent.select(TriggerEvent.idempotency_key, TriggerEvent.source).run()
    # The delivery id, scoped by the endpoint that received it.
    assert events[0]["idempotency_key"] == f"{created['id']}:72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert len(events) == 3
    assert len(await executions(engine_client)) == 3


async def test_header_token_valid_wrong_and_replayed(engine_client: httpx.AsyncClient) -> None:
    auth = {"type": "header_token", "secret": TOKEN, "header": "X-Hook-Token"}
    await create_webhook(engine_client, auth=auth)
    await import_published(engine_client, echo_workflow())
    headers = {"content-type": "application/json", "x-hook-token": TOKEN, "idempotency-key": "k1"}
    first = await _hook(engine_client, headers)
    assert first.status_code == 202, first.text
    replay = await _hook(engine_client, headers)
    assert (replay.status_code, replay.json()["duplicate"]) == (200, True)
    for wrong in ({"x-hook-token": TOKEN + "x"}, {"x-webhook-token": TOKEN}, {}):
        assert (await _hook(engine_client, wrong)).status_code == 401
    assert len(await executions(engine_client)) == 1
    assert (await health(engine_client))[
        "last_error"
    ] == "webhook orders: missing X-Hook-Token header"


async def test_no_auth_accepts_anyone_and_dedupes_on_an_idempotency_key(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, auth={"type": "none"})
    await import_published(engine_client, echo_workflow())
    assert (await _hook(engine_client, {"content-type": "application/json"})).status_code == 202
    assert (await _hook(engine_client, {"content-type": "application/json"})).status_code == 202
    keyed = {"content-type": "application/json", "idempotency-key": "once"}
    assert [(await _hook(engine_client, keyed)).status_code for _ in range(2)] == [202, 200]
    assert len(await executions(engine_client)) == 3


async def test_refusals_do_not_tell_whether_a_path_has_a_secret(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, path="signed", auth={"type": "hmac_sha256"})
    await create_webhook(engine_client, path="tokened", auth={"type": "header_token"})
    await create_webhook(engine_client, path="off", enabled=False)
    signed = await _hook(engine_client, standard_headers(WHSEC, BODY), path="signed")
    tokened = await _hook(engine_client, {"x-webhook-token": "guess"}, path="tokened")
    assert signed.status_code == tokened.status_code == 401
    assert signed.json() == tokened.json()
    assert signed.json()["type"] == "https://switchyard.dev/problems/unauthorized"
    unknown = await _hook(engine_client, {}, path="nowhere")
    disabled = await _hook(engine_client, {}, path="off")
    assert unknown.status_code == disabled.status_code == 404
    assert unknown.json() == disabled.json()


async def test_secrets_and_signatures_never_reach_the_logs(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, auth={"type": "hmac_sha256", "secret": WHSEC})
    await create_webhook(engine_client, path="t", auth={"type": "header_token", "secret": TOKEN})
    valid = standard_headers(WHSEC, BODY)
    with capture_logs() as logs:
        await _hook(engine_client, valid)
        await _hook(engine_client, {**valid, "webhook-signature": "v1,Zm9yZ2Vk"})
        await _hook(engine_client, {"x-webhook-token": TOKEN}, path="t")
        await _hook(engine_client, {"x-webhook-token": "a-guessed-token"}, path="t")
    text = repr(logs)
    assert any(entry["event"] == "webhook_refused" for entry in logs)
    for secret in (
        WHSEC,
        WHSEC[6:],
        TOKEN,
        "a-guessed-token",
        valid["webhook-signature"],
        "Zm9yZ2Vk",
    ):
        assert secret not in text
