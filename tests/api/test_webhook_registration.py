"""`registration` on webhook endpoints through the API: checked before it is stored (each
problem names the field and the fix), shown on reads with `registration_status`, removed with
null; a deleted endpoint's registration waits in the stale list for the scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN

PUBLIC_URL = "https://hooks.example.com"
GITHUB = {"provider": "github", "credential": "github", "repository": "acme/shop"}


@pytest.fixture
async def client(settings_for: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """An api-only app with PUBLIC_URL set and an `api_key` credential named `github`."""
    app = create_app(settings_for(roles=frozenset({Role.API}), public_url=PUBLIC_URL))
    async with serving(app, token=API_TOKEN) as opened:
        response = await opened.post(
            "/api/v1/credentials",
            json={"name": "github", "type": "api_key", "data": {"api_key": "ghp_x"}},
        )
        assert response.status_code == 201, response.text
        yield opened


async def _create(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"trigger_key": "shop", "path": "shop", "auth": {"type": "github"}, **fields}
    return await client.post("/api/v1/webhooks", json=body)


def _fields(response: httpx.Response) -> dict[str, str]:
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"
    return {e["field"]: e["message"] for e in response.json()["errors"]}


async def test_github_registration_is_stored_pending_and_shown_on_reads(
    client: httpx.AsyncClient,
) -> None:
    response = await _create(client, registration=GITHUB)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["registration"] == {**GITHUB, "events": ["push"]}
    assert created["registration_status"] == {
        "state": "pending", "external_id": None, "last_error": None, "checked_at": None,
        "expires_at": None,
    }  # fmt: skip
    shown = (await client.get(f"/api/v1/webhooks/{created['id']}")).json()
    assert shown["registration"]["repository"] == "acme/shop"
    listed = (await client.get("/api/v1/webhooks")).json()["items"]
    assert listed[0]["registration_status"]["state"] == "pending"
    triggers = (await client.get("/api/v1/registry/triggers")).json()["items"]
    [entry] = [t for t in triggers if t["trigger_key"] == "shop"]
    assert entry["registrations"][0]["status"]["state"] == "pending"

    # Removing it detaches it for removal at the sender (listed as stale until then).
    response = await client.patch(f"/api/v1/webhooks/{created['id']}", json={"registration": None})
    assert response.status_code == 200, response.text
    assert response.json()["registration"] is None
    assert response.json()["registration_status"] is None
    stale = (await client.get("/api/v1/webhooks/registrations/stale")).json()["items"]
    assert [s["webhook_id"] for s in stale] == [created["id"]]


async def test_deleting_an_endpoint_keeps_its_registration_as_stale(
    client: httpx.AsyncClient,
) -> None:
    created = (await _create(client, registration=GITHUB)).json()
    assert (await client.delete(f"/api/v1/webhooks/{created['id']}")).status_code == 204
    [stale] = (await client.get("/api/v1/webhooks/registrations/stale")).json()["items"]
    assert stale["webhook_id"] == created["id"]
    assert stale["provider"] == "github"
    assert stale["path"] == "shop"
    assert stale["status"]["state"] == "pending"


async def test_problems_name_the_field_and_the_fix(client: httpx.AsyncClient) -> None:
    missing = _fields(await _create(client, registration={**GITHUB, "credential": "nope"}))
    assert "POST /api/v1/credentials" in missing["registration.credential"]
    wrong_auth = _fields(await _create(client, auth={"type": "hmac_sha256"}, registration=GITHUB))
    assert '"type": "github"' in wrong_auth["auth.type"]
    template = _fields(
        await _create(
            client,
            auth={"type": "none"},
            registration={"provider": "http", "subscribe": {"url": "{{ callback_url"},
                          "renew": {"url": "https://x.example/renew"}},
        )
    )  # fmt: skip
    assert "registration.subscribe.url" in template
    assert "renew" in template["registration.renew_every_seconds"]
    schema = await _create(client, registration={"provider": "github", "credential": "github"})
    assert schema.status_code == 400
    assert "repository" in schema.text


async def test_a_registration_needs_public_url(api_client: httpx.AsyncClient) -> None:
    problems = _fields(await _create(api_client, registration=GITHUB))
    assert "PUBLIC_URL" in problems["registration"]


async def test_a_credential_of_another_type_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/credentials",
        json={"name": "login", "type": "basic_auth", "data": {"username": "u", "password": "p"}},
    )
    assert response.status_code == 201, response.text
    problems = _fields(await _create(client, registration={**GITHUB, "credential": "login"}))
    assert "'api_key'" in problems["registration.credential"]
