"""Inbound webhooks, intake: live endpoints, bodies, limits, replays and races, sync answers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.settings import Role, Settings
from server.api.hooks import UNKNOWN_PATH_KEY
from server.app import create_app
from server.db.pool import asyncpg_pool, piccolo_database
from server.db.tables import TriggerEvent
from server.db.trigger_health import trigger_health
from tests.e2e.test_hooks_auth import BODY, WHSEC, echo_workflow, executions, health
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN, ENCRYPTION_KEY
from tests.support.hook_senders import create_webhook, standard_headers
from tests.support.processes import environment, switchyard_run
from tests.support.workflows import import_published, wait_for

JSON = {"content-type": "application/json"}


def _chain(*keys: str, first: dict[str, Any] | None = None) -> dict[str, Any]:
    """A workflow of transform steps `keys`, the first one's edges fanning out to the rest."""
    steps = [
        {
            "key": key,
            "kind": "action",
            "action_key": "transform",
            "cfg": {"output": {"step": key, "total": "{{ trigger.total }}"}},
        }
        for key in keys
    ]
    if first is not None:
        steps[0] = first
    return {
        "name": "Chain",
        "steps": steps,
        "edges": [{"from": keys[0], "to": key} for key in keys[1:]],
        "subscriptions": [{"trigger_key": "orders"}],
    }


async def test_a_new_endpoint_is_live_at_once_and_a_deleted_one_is_gone(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, path="first")  # makes the key "orders" known
    await import_published(engine_client, echo_workflow())  # subscribed before the endpoint
    created = await create_webhook(engine_client)
    accepted = await engine_client.post("/hooks/orders", content=BODY, headers=JSON)
    assert accepted.status_code == 202, accepted.text
    await engine_client.patch(f"/api/v1/webhooks/{created['id']}", json={"path": "moved"})
    assert (await engine_client.post("/hooks/orders", content=BODY)).status_code == 404
    assert (await engine_client.post("/hooks/moved", content=BODY)).status_code == 202
    await engine_client.patch(f"/api/v1/webhooks/{created['id']}", json={"enabled": False})
    assert (await engine_client.post("/hooks/moved", content=BODY)).status_code == 404
    await engine_client.delete(f"/api/v1/webhooks/{created['id']}")
    assert (await engine_client.post("/hooks/moved", content=BODY)).status_code == 404


async def test_a_change_through_one_replica_applies_at_once_on_another(
    settings_for: Callable[..., Settings], database_env: dict[str, str], tmp_path: Path
) -> None:
    keys = (ENCRYPTION_KEY,)
    env = environment(**database_env, ENCRYPTION_KEYS=keys[0], API_TOKENS=API_TOKEN, ROLES="api")
    app = create_app(settings_for(roles=frozenset({Role.API}), encryption_keys=keys))
    with switchyard_run([], env, tmp_path / "other") as process:
        await asyncio.to_thread(process.wait_ready)
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with (
            serving(app, API_TOKEN) as local,
            httpx.AsyncClient(base_url=process.url, headers=auth, timeout=10) as other,
        ):
            created = await create_webhook(other, auth={"type": "hmac_sha256", "secret": WHSEC})
            signed = standard_headers(WHSEC, BODY)

            async def send(client: httpx.AsyncClient, path: str) -> int:
                response = await client.post(f"/hooks/{path}", content=BODY, headers=signed)
                return response.status_code

            assert await send(local, "orders") == 202
            url = f"/api/v1/webhooks/{created['id']}"
            await local.patch(url, json={"path": "moved"})
            assert await send(other, "orders") == 404
            assert await send(other, "moved") == 200  # the same webhook-id: a duplicate
            await other.patch(url, json={"enabled": False})
            assert await send(local, "moved") == 404


async def test_unknown_and_disabled_paths_are_counted_as_refused(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, enabled=False)
    assert (await engine_client.post("/hooks/orders", content=BODY)).status_code == 404
    assert (await engine_client.post("/hooks/no/such/path", content=BODY)).status_code == 404
    assert (await engine_client.get("/hooks/orders")).status_code == 405
    counted = await health(engine_client)
    assert (counted["refused"], counted["last_error"]) == (1, "webhook orders: endpoint disabled")
    async with asyncpg_pool(piccolo_database()).acquire() as connection:
        unknown = (await trigger_health(connection, [UNKNOWN_PATH_KEY]))[UNKNOWN_PATH_KEY]
    assert (unknown.refused, unknown.last_error) == (1, "no endpoint at 'no/such/path'")
    metrics = (await engine_client.get("/metrics")).text
    assert f'trigger_key="{UNKNOWN_PATH_KEY}"' in metrics


async def test_bodies_over_the_limit_answer_413_naming_the_limit_and_setting(
    settings_for: Callable[..., Settings],
) -> None:
    app = create_app(settings_for(roles=frozenset({Role.API}), max_payload_bytes=1024))
    async with serving(app, API_TOKEN) as client:
        await create_webhook(client)
        ok = await client.post(
            "/hooks/orders", content=b'{"a": "' + b"x" * 900 + b'"}', headers=JSON
        )
        assert ok.status_code == 202
        too_large = await client.post("/hooks/orders", content=b"x" * 1025, headers=JSON)
        assert too_large.status_code == 413
        assert too_large.headers["content-type"] == "application/problem+json"
        detail = too_large.json()["detail"]
        assert "larger than 1024 bytes (1 KiB)" in detail
        assert "MAX_PAYLOAD_BYTES=1024" in detail
        assert (await health(client))[
            "last_error"
        ] == "webhook orders: body larger than MAX_PAYLOAD_BYTES"


@pytest.mark.parametrize(
    ("body", "content_type", "payload"),
    [
        (b'{"total": 42}', "application/json", {"total": 42}),
        (
            b"total=42&tag=a&tag=b",
            "application/x-www-form-urlencoded",
            {"total": "42", "tag": ["a", "b"]},
        ),
        (
            b"<total>42</total>",
            "text/xml; charset=utf-8",
            {"content_type": "text/xml; charset=utf-8", "body": "<total>42</total>"},
        ),
        (
            b"\xff\x00\x01",
            "application/octet-stream",
            {
                "content_type": "application/octet-stream",
                "body_base64": base64.b64encode(b"\xff\x00\x01").decode(),
            },
        ),
        (b"", "application/json", {}),
    ],
)
async def test_bodies_become_the_trigger_payload_by_content_type(
    engine_client: httpx.AsyncClient, body: bytes, content_type: str, payload: Any
) -> None:
    await create_webhook(engine_client)
    await import_published(engine_client, echo_workflow())
    response = await engine_client.post(
        "/hooks/orders", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 202, response.text
    execution = await wait_for(engine_client, response.json()["execution_ids"][0])
    assert execution["context_data"]["trigger"] == payload
    event = await TriggerEvent.select(TriggerEvent.source).output(load_json=True).first().run()
    assert event is not None
    assert event["source"]["content_type"] == content_type
    assert event["source"]["via"] == "webhook"


async def test_malformed_json_answers_400_after_authentication(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, auth={"type": "hmac_sha256", "secret": WHSEC})
    broken = b'{"total": '
    unsigned = await engine_client.post("/hooks/orders", content=broken, headers=JSON)
    assert unsigned.status_code == 401
    signed = await engine_client.post(
        "/hooks/orders", content=broken, headers=standard_headers(WHSEC, broken)
    )
    assert signed.status_code == 400
    assert "not valid JSON" in signed.json()["detail"]
    assert await TriggerEvent.count() == 0


async def test_fifty_concurrent_identical_deliveries_run_once(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, auth={"type": "hmac_sha256", "secret": WHSEC})
    await import_published(engine_client, echo_workflow())
    headers = standard_headers(WHSEC, BODY, message_id="msg_race")
    responses = await asyncio.gather(
        *(engine_client.post("/hooks/orders", content=BODY, headers=headers) for _ in range(50))
    )
    bodies = [r.json() for r in responses]
    assert sorted(r.status_code for r in responses) == [200] * 49 + [202]
    assert len({b["event_id"] for b in bodies}) == 1
    assert len({tuple(b["execution_ids"]) for b in bodies}) == 1
    await wait_for(engine_client, bodies[0]["execution_ids"][0])
    assert len(await executions(engine_client)) == 1
    assert await TriggerEvent.count() == 1
    counted = await health(engine_client)
    assert (counted["accepted"], counted["deduplicated"]) == (1, 49)


async def test_sync_mode_answers_the_output_of_the_steps_that_ended_the_run(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, response_mode="sync")
    await import_published(engine_client, _chain("start", "left", "right"))
    response = await engine_client.post("/hooks/orders", content=BODY, headers=JSON)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["error"], body["duplicate"]) == ("SUCCESS", None, False)
    assert body["output"] == {
        "left": {"step": "left", "total": 42},
        "right": {"step": "right", "total": 42},
    }
    replay = await engine_client.post(
        "/hooks/orders", content=BODY, headers={**JSON, "idempotency-key": "x"}
    )
    again = await engine_client.post(
        "/hooks/orders", content=BODY, headers={**JSON, "idempotency-key": "x"}
    )
    assert (replay.status_code, again.status_code) == (200, 200)
    assert again.json() == {**replay.json(), "duplicate": True}


async def test_sync_mode_answers_202_with_the_execution_when_it_takes_longer(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, response_mode="sync", sync_timeout_seconds=0.3)
    delay = {"key": "wait", "kind": "delay", "cfg": {"seconds": 3600}}
    await import_published(engine_client, _chain("wait", "after", first=delay))
    response = await engine_client.post("/hooks/orders", content=BODY, headers=JSON)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["execution_id"] == body["execution_ids"][0]
    assert body["status"] in {"PENDING", "RUNNING", "WAITING"}
    assert "output" not in body


async def test_sync_mode_with_no_subscriber_answers_like_async(
    engine_client: httpx.AsyncClient,
) -> None:
    await create_webhook(engine_client, response_mode="sync")
    response = await engine_client.post("/hooks/orders", content=BODY, headers=JSON)
    assert response.status_code == 202
    assert (response.json()["outcome"], response.json()["execution_ids"]) == ("no_match", [])
    assert (await health(engine_client))["no_match"] == 1
