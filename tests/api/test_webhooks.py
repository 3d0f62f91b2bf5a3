"""Webhook endpoint CRUD: validation, write-only secrets, rotation, registry, pagination."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from config.settings import Role, Settings
from server.app import create_app
from server.crypto.aead import Keyring, SecretDecryptionError, format_key_entry, generate_key
from server.db.rotation import rotate_keys
from server.db.tables import WebhookEndpoint
from server.db.webhooks import find_endpoint
from server.keyring import load_keyring
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.hook_senders import create_webhook

TOKEN = "token-of-at-least-16-characters"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _fields(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/problem+json"
    return {problem["field"]: problem["message"] for problem in response.json()["errors"]}


async def test_create_answers_the_endpoint_without_its_secret(
    api_client: httpx.AsyncClient,
) -> None:
    auth = {"type": "header_token", "secret": TOKEN, "header": "X-Hook-Token"}
    created = await create_webhook(api_client, auth=auth, response_mode="sync")
    assert created["auth"] == {
        "type": "header_token",
        "has_secret": True,
        "has_previous_secret": False,
        "header": "X-Hook-Token",
    }
    assert (created["path"], created["trigger_key"], created["response_mode"]) == (
        "orders",
        "orders",
        "sync",
    )
    assert (created["enabled"], created["sync_timeout_seconds"]) == (True, 10.0)
    assert created["generated_secret"] is None
    shown = await api_client.get(f"/api/v1/webhooks/{created['id']}")
    listed = await api_client.get("/api/v1/webhooks")
    for response in (shown, listed):
        assert TOKEN not in response.text
        assert "generated_secret" not in response.text
    assert listed.json()["items"] == [shown.json()]


async def test_a_generated_secret_is_returned_once(api_client: httpx.AsyncClient) -> None:
    created = await create_webhook(api_client, auth={"type": "hmac_sha256"})
    secret = created["generated_secret"]
    assert secret.startswith("whsec_")
    assert created["auth"]["has_secret"] is True
    shown = await api_client.get(f"/api/v1/webhooks/{created['id']}")
    assert secret not in shown.text
    assert secret[6:] not in shown.text


async def test_secrets_are_sealed_to_their_row(
    api_client: httpx.AsyncClient, settings_for: Callable[..., Settings]
) -> None:
    created = await create_webhook(api_client, auth={"type": "github", "secret": TOKEN})
    keyring = load_keyring(settings_for())
    row = await WebhookEndpoint.select().first().run()
    assert row is not None
    assert TOKEN.encode() not in row["secret_ciphertext"]
    assert row["secret_key_id"] == keyring.primary_key_id
    endpoint = await find_endpoint("orders", keyring)
    assert endpoint is not None
    assert endpoint.auth.secrets == (TOKEN,)
    assert TOKEN not in repr(endpoint)
    other = await create_webhook(
        api_client, path="copy", auth={"type": "github", "secret": "another-github-secret"}
    )
    await (
        WebhookEndpoint.update({WebhookEndpoint.secret_ciphertext: row["secret_ciphertext"]})
        .where(WebhookEndpoint.id == uuid.UUID(other["id"]))
        .run()
    )
    with pytest.raises(SecretDecryptionError):
        await find_endpoint("copy", keyring)
    assert created["id"] != other["id"]


async def test_rotation_keeps_the_previous_secret_until_it_is_dropped(
    api_client: httpx.AsyncClient, settings_for: Callable[..., Settings]
) -> None:
    keyring = load_keyring(settings_for())
    created = await create_webhook(api_client, auth={"type": "hmac_sha256", "secret": WHSEC})
    url = f"/api/v1/webhooks/{created['id']}"
    new = "whsec_" + "A" * 43 + "="
    rotated = (await api_client.patch(url, json={"auth": {"secret": new}})).json()
    assert (rotated["auth"]["has_secret"], rotated["auth"]["has_previous_secret"]) == (True, True)
    assert (await find_endpoint("orders", keyring)).auth.secrets == (new, WHSEC)  # type: ignore[union-attr]
    generated = (await api_client.patch(url, json={"auth": {"generate_secret": True}})).json()
    newest = generated["generated_secret"]
    assert (await find_endpoint("orders", keyring)).auth.secrets == (newest, new)  # type: ignore[union-attr]
    dropped = (await api_client.patch(url, json={"auth": {"drop_previous_secret": True}})).json()
    assert dropped["auth"]["has_previous_secret"] is False
    assert dropped["generated_secret"] is None
    assert (await find_endpoint("orders", keyring)).auth.secrets == (newest,)  # type: ignore[union-attr]


async def test_changing_the_auth_type_replaces_the_secrets(
    api_client: httpx.AsyncClient, settings_for: Callable[..., Settings]
) -> None:
    created = await create_webhook(api_client, auth={"type": "header_token", "secret": TOKEN})
    url = f"/api/v1/webhooks/{created['id']}"
    assert created["auth"]["header"] == "X-Webhook-Token"
    changed = (await api_client.patch(url, json={"auth": {"type": "github"}})).json()
    assert changed["auth"] == {
        "type": "github",
        "has_secret": True,
        "has_previous_secret": False,
        "header": None,
    }
    endpoint = await find_endpoint("orders", load_keyring(settings_for()))
    assert endpoint is not None
    assert endpoint.auth.secrets == (changed["generated_secret"],)
    opened = (await api_client.patch(url, json={"auth": {"type": "none"}})).json()
    assert opened["auth"]["has_secret"] is False
    assert (await WebhookEndpoint.select(WebhookEndpoint.secret_ciphertext).first().run()) == {
        "secret_ciphertext": None
    }


async def test_other_fields_change_without_touching_the_secret(
    api_client: httpx.AsyncClient, settings_for: Callable[..., Settings]
) -> None:
    created = await create_webhook(api_client, auth={"type": "header_token", "secret": TOKEN})
    response = await api_client.patch(
        f"/api/v1/webhooks/{created['id']}",
        json={
            "path": "new/path",
            "enabled": False,
            "response_mode": "sync",
            "sync_timeout_seconds": 2.5,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["path"], body["enabled"], body["response_mode"]) == ("new/path", False, "sync")
    assert body["sync_timeout_seconds"] == 2.5
    assert body["auth"] == created["auth"]
    assert body["updated_at"] > created["updated_at"]
    endpoint = await find_endpoint("new/path", load_keyring(settings_for()))
    assert endpoint is not None
    assert (endpoint.auth.secrets, endpoint.sync_timeout_seconds) == ((TOKEN,), 2.5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"path": "has space"}, "path"),
        ({"path": "a//b"}, "path"),
        ({"path": "/leading"}, "path"),
        ({"path": "x" * 201}, "path"),
        ({"path": "a/../b"}, "path"),
        ({"auth": {"type": "none", "secret": TOKEN}}, "auth.secret"),
        ({"auth": {"type": "hmac_sha256", "secret": "not-whsec"}}, "auth.secret"),
        ({"auth": {"type": "header_token", "secret": "short"}}, "auth.secret"),
        ({"auth": {"type": "github", "header": "X-Token"}}, "auth.header"),
        (
            {"auth": {"type": "github", "secret": "s", "generate_secret": True}},
            "auth.generate_secret",
        ),
        ({"auth": {}}, "auth.type"),
        ({"auth": {"type": "basic"}}, "auth.type"),
        ({"response_mode": "later"}, "response_mode"),
        ({"sync_timeout_seconds": 0}, "sync_timeout_seconds"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_invalid_endpoints_are_refused_naming_the_field(
    api_client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    document = {"trigger_key": "orders", "path": "orders", "auth": {"type": "none"}, **body}
    response = await api_client.post("/api/v1/webhooks", json=document)
    assert response.status_code in {400, 422}, response.text
    errors = response.json()["errors"]
    named = {error.get("field") or error.get("key") for error in errors}
    assert field in named or any(field in error["message"] for error in errors), errors
    assert TOKEN not in response.text


SHORT_GITHUB_SECRET = "fifteen-chars!!"  # one short of the minimum


async def test_a_short_github_secret_is_refused_on_create(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post(
        "/api/v1/webhooks",
        json={
            "trigger_key": "orders",
            "path": "orders",
            "auth": {"type": "github", "secret": SHORT_GITHUB_SECRET},
        },
    )
    assert response.status_code == 422, response.text
    message = _fields(response)["auth.secret"]
    assert "at least 16 characters" in message
    assert "omit it to have one generated" in message
    assert SHORT_GITHUB_SECRET not in response.text
    assert (await api_client.get("/api/v1/webhooks")).json()["items"] == []
    sixteen = await create_webhook(
        api_client, auth={"type": "github", "secret": SHORT_GITHUB_SECRET + "!"}
    )
    assert sixteen["auth"]["has_secret"] is True


@pytest.mark.parametrize(
    "auth",
    [
        {"secret": SHORT_GITHUB_SECRET},  # rotation on a github endpoint
        {"type": "github", "secret": SHORT_GITHUB_SECRET},  # switching another type to github
    ],
)
async def test_a_short_github_secret_is_refused_on_change(
    api_client: httpx.AsyncClient, settings_for: Callable[..., Settings], auth: dict[str, str]
) -> None:
    initial = {"type": "github", "secret": TOKEN} if "type" not in auth else {"type": "none"}
    created = await create_webhook(api_client, auth=initial)
    response = await api_client.patch(f"/api/v1/webhooks/{created['id']}", json={"auth": auth})
    assert response.status_code == 422, response.text
    assert "at least 16 characters" in _fields(response)["auth.secret"]
    assert SHORT_GITHUB_SECRET not in response.text
    endpoint = await find_endpoint("orders", load_keyring(settings_for()))
    assert endpoint is not None
    assert endpoint.auth.type.value == initial["type"]
    assert SHORT_GITHUB_SECRET not in endpoint.auth.secrets


async def test_a_path_in_use_is_a_conflict(api_client: httpx.AsyncClient) -> None:
    await create_webhook(api_client, path="shared")
    taken = await api_client.post(
        "/api/v1/webhooks",
        json={"trigger_key": "other", "path": "shared", "auth": {"type": "none"}},
    )
    assert taken.status_code == 409
    assert "choose another" in taken.json()["detail"]
    second = await create_webhook(api_client, path="second")
    moved = await api_client.patch(f"/api/v1/webhooks/{second['id']}", json={"path": "shared"})
    assert moved.status_code == 409
    registry = (await api_client.get("/api/v1/registry/triggers")).json()["items"]
    assert "other" not in {entry["trigger_key"] for entry in registry}  # rolled back


async def test_the_trigger_key_is_registered_as_a_webhook_source(
    api_client: httpx.AsyncClient,
) -> None:
    await create_webhook(api_client, trigger_key="leads")
    await create_webhook(api_client, path="leads-2", trigger_key="leads")  # a second path
    registry = (await api_client.get("/api/v1/registry/triggers")).json()["items"]
    assert {e["trigger_key"]: e["type"] for e in registry}["leads"] == "webhook"
    event_source = {"trigger_key": "events-only", "type": "event"}
    assert (
        await api_client.post("/api/v1/registry/triggers", json=event_source)
    ).status_code == 201
    clash = await api_client.post(
        "/api/v1/webhooks",
        json={"trigger_key": "events-only", "path": "p", "auth": {"type": "none"}},
    )
    assert clash.status_code == 409
    assert "'event'" in clash.json()["detail"]


async def test_delete_removes_the_endpoint(api_client: httpx.AsyncClient) -> None:
    created = await create_webhook(api_client)
    url = f"/api/v1/webhooks/{created['id']}"
    assert (await api_client.delete(url)).status_code == 204
    assert (await api_client.get(url)).status_code == 404
    assert (await api_client.delete(url)).status_code == 404
    assert (await api_client.patch(url, json={"enabled": False})).status_code == 404


async def test_list_pages_with_a_keyset_cursor(api_client: httpx.AsyncClient) -> None:
    ids = [(await create_webhook(api_client, path=f"p{n}"))["id"] for n in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api_client.get("/api/v1/webhooks", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    filtered = await api_client.get("/api/v1/webhooks", params={"trigger_key": "nothing"})
    assert filtered.json() == {"items": [], "next_cursor": None}
    bad = await api_client.get("/api/v1/webhooks", params={"cursor": "garbage"})
    assert bad.status_code == 400


async def test_secrets_never_reach_the_logs(api_client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        created = await create_webhook(api_client, auth={"type": "header_token", "secret": TOKEN})
        url = f"/api/v1/webhooks/{created['id']}"
        await api_client.patch(url, json={"auth": {"secret": TOKEN + "-next"}})
        await api_client.patch(url, json={"auth": {"secret": "too-short"}})
        generated = (await api_client.patch(url, json={"auth": {"generate_secret": True}})).json()
    text = repr(logs)
    for secret in (TOKEN, "too-short", generated["generated_secret"]):
        assert secret not in text


async def test_webhooks_need_the_api_token(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/api/v1/webhooks", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


async def test_key_rotation_re_encrypts_both_webhook_secrets(
    settings_for: Callable[..., Settings],
) -> None:
    old_key, new_key = generate_key(), generate_key()
    settings = settings_for(
        roles=frozenset({Role.API}), encryption_keys=(format_key_entry("old", old_key),)
    )
    async with serving(create_app(settings), API_TOKEN) as client:
        created = await create_webhook(client, auth={"type": "github", "secret": TOKEN})
        await client.patch(
            f"/api/v1/webhooks/{created['id']}", json={"auth": {"secret": TOKEN + "-next"}}
        )
        report = await rotate_keys(Keyring([("new", new_key), ("old", old_key)]))
        assert {t.table: t.rotated for t in report.tables}["webhook_endpoint"] == 1
        endpoint = await find_endpoint("orders", Keyring([("new", new_key)]))
    assert endpoint is not None
    assert endpoint.auth.secrets == (TOKEN + "-next", TOKEN)


async def test_answers_show_the_url_to_give_the_sender_relative_without_public_url(
    api_client: httpx.AsyncClient,
) -> None:
    created = await create_webhook(api_client, path="shop/orders")
    assert created["url"] == "/hooks/shop/orders"
    shown = await api_client.get(f"/api/v1/webhooks/{created['id']}")
    assert shown.json()["url"] == "/hooks/shop/orders"
    delivered = await api_client.post(created["url"], json={"id": 1})
    assert delivered.status_code == 202, delivered.text


async def test_answers_show_the_url_on_public_url(settings_for: Callable[..., Settings]) -> None:
    settings = settings_for(roles=frozenset({Role.API}), public_url="https://hooks.example.com/sy")
    async with serving(create_app(settings), token=API_TOKEN) as client:
        created = await create_webhook(client)
        url = "https://hooks.example.com/sy/hooks/orders"
        assert created["url"] == url
        shown = await client.get(f"/api/v1/webhooks/{created['id']}")
        listed = await client.get("/api/v1/webhooks")
        changed = await client.patch(
            f"/api/v1/webhooks/{created['id']}", json={"path": "orders-v2"}
        )
    assert shown.json()["url"] == url
    assert listed.json()["items"][0]["url"] == url
    assert changed.json()["url"] == "https://hooks.example.com/sy/hooks/orders-v2"
