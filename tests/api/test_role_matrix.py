"""Scoped tokens: every route of the app declares the role it needs, and one guard enforces it.

The matrix is checked by real HTTP calls: every route handler of the app (enumerated from
`app.routes`, so a new route is covered the day it is added) is called with a token of each
role and with none; a role the route's requirement does not grant is refused 403, a granted one
is never refused for its role (401/403), and a call without a token is refused 401 (sent to
sign in, on a console page) unless the route is public. Console pages take the same tokens as
the API (a bearer header here; the session cookie carries one in a browser). A route that declares no role fails the first test (and `create_app`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from litestar import Litestar, get
from litestar.routes import HTTPRoute

from config.settings import Role, Settings
from server.access import GRANTED_TO, PUBLIC, REQUIREMENTS, AccessRole
from server.api.auth import routes_without_role
from server.app import create_app
from server.db.tokens import issue_token
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

# The issue's matrix, stated once more by hand for the operations people ask about.
EXPECTED_ROLES = {
    ("GET", "/api/v1/workflows"): "viewer",
    ("GET", "/api/v1/executions/{execution_id:uuid}"): "viewer",
    ("POST", "/api/v1/workflows"): "editor",
    ("POST", "/api/v1/workflows/import"): "editor",
    ("POST", "/api/v1/workflows/{workflow_id:uuid}/versions/{version_num:int}/publish"): "editor",
    ("POST", "/api/v1/workflows/{workflow_id:uuid}/variables"): "editor",
    ("POST", "/api/v1/webhooks"): "editor",
    ("POST", "/api/v1/schedules"): "editor",
    ("POST", "/api/v1/workflows/{workflow_id:uuid}/run"): "operator",
    ("POST", "/api/v1/executions/{execution_id:uuid}/cancel"): "operator",
    ("POST", "/api/v1/executions/{execution_id:uuid}/retry"): "operator",
    ("POST", "/api/v1/events/{event_id:uuid}/replay"): "operator",
    ("POST", "/api/v1/jobs/{job_id:int}/requeue"): "operator",
    ("POST", "/api/v1/events"): "ingest",
    ("POST", "/api/v1/credentials"): "admin",
    ("GET", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens"): "admin",
    ("GET", "/api/v1/audit"): "admin",
    ("POST", "/hooks/{path:path}"): "public",
    ("GET", "/health"): "public",
    ("GET", "/schema/openapi.json"): "public",
}


def all_roles_app(settings_for: Callable[..., Settings]) -> Litestar:
    return create_app(settings_for(roles=frozenset(Role)))


def handlers(app: Litestar) -> Iterator[tuple[str, str, str, str | None]]:
    """(method, path, required role, audit action) of every HTTP handler of `app`."""
    for route in app.routes:
        assert isinstance(route, HTTPRoute), f"{route.path}: not an HTTP route"
        for method, (handler, _) in route.route_handler_map.items():
            yield str(method), route.path, str(handler.opt.get("role")), handler.opt.get("audit")


def test_every_route_declares_a_role_and_every_write_an_audit_action(
    settings_for: Callable[..., Settings],
) -> None:
    app = all_roles_app(settings_for)
    found = {(method, path): (role, audit) for method, path, role, audit in handlers(app)}
    assert len(found) > 90
    undeclared = [key for key, (role, _) in found.items() if role not in REQUIREMENTS]
    assert undeclared == []
    unaudited = [
        key
        for key, (role, audit) in found.items()
        if key[0] in WRITE_METHODS and role != PUBLIC and not audit
    ]
    assert unaudited == []
    for key, role in EXPECTED_ROLES.items():
        assert found[key][0] == role, key


def test_a_route_without_a_role_is_caught() -> None:
    @get("/undeclared", sync_to_thread=False)
    def undeclared() -> str:
        return "nobody checked me"

    bare = Litestar(route_handlers=[undeclared], openapi_config=None)
    assert routes_without_role(bare) == [
        "GET /undeclared",
        "OPTIONS /undeclared",
    ]


def test_the_openapi_document_states_each_operations_required_role(
    settings_for: Callable[..., Settings],
) -> None:
    app = all_roles_app(settings_for)
    document = app.openapi_schema.to_schema()
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert len(operations) > 60
    for path, method, operation in operations:
        assert operation["x-required-role"] in REQUIREMENTS, (method, path)
        assert "Required role: " in operation["description"], (method, path)
    cancel = document["paths"]["/api/v1/executions/{execution_id}/cancel"]["post"]
    assert cancel["x-required-role"] == "operator"
    assert cancel["description"].endswith("Required role: operator (granted to admin, operator).")
    assert "403" in cancel["responses"]


@pytest.fixture
async def served(
    settings_for: Callable[..., Settings],
) -> AsyncIterator[tuple[Litestar, httpx.AsyncClient, dict[str, str]]]:
    app = create_app(settings_for(roles=frozenset({Role.API})))  # every route; no loops
    async with serving(app) as client:
        tokens = {
            role.value: (await issue_token(f"{role} token", role=role)).token for role in AccessRole
        }
        yield app, client, tokens


def concrete(path: str) -> str:
    """`path` with made-up values for its parameters."""
    values = {"int": "987654", "str": "nothing", "path": "nothing/here.js"}

    def value(match: re.Match[str]) -> str:
        kind = match.group(1)
        return str(uuid.uuid4()) if kind == "uuid" else values[kind]

    return re.sub(r"\{\w+:(\w+)\}", value, path)


async def test_the_role_matrix_holds_for_every_route_by_http(
    served: tuple[Litestar, httpx.AsyncClient, dict[str, str]],
) -> None:
    app, client, tokens = served
    checked = 0
    for method, path, requirement, _ in handlers(app):
        url = concrete(path)
        body: dict[str, object] | None = {} if method in {"POST", "PUT", "PATCH"} else None
        anonymous = await client.request(method, url, json=body)
        if requirement == PUBLIC:
            assert anonymous.status_code not in (401, 403), (method, path)
        elif path.startswith("/console"):  # a page without a session: to sign-in
            assert anonymous.status_code == 303, (method, path, anonymous.text)
            assert anonymous.headers["location"].startswith("/console/login")
        else:
            assert anonymous.status_code == 401, (method, path, anonymous.text)
        for role, token in tokens.items():
            response = await client.request(
                method, url, headers={"Authorization": f"Bearer {token}"}, json=body
            )
            granted = requirement == PUBLIC or role in GRANTED_TO[requirement]
            if granted:
                assert response.status_code not in (401, 403), (role, method, path, response.text)
            else:
                assert response.status_code == 403, (role, method, path, response.text)
                detail = response.text  # a problem detail, or the console's page saying it
                assert f"role ({role})" in detail
                assert f"needs the {requirement}" in detail
            checked += 1
    assert checked > 450


async def test_an_ingest_token_sends_events_only_to_its_trigger_keys(
    served: tuple[Litestar, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, client, _ = served
    admin = {"Authorization": f"Bearer {API_TOKEN}"}
    for key in ("orders", "refunds"):
        registered = await client.post(
            "/api/v1/registry/triggers", json={"trigger_key": key, "type": "event"}, headers=admin
        )
        assert registered.status_code == 201, registered.text
    made = await client.post(
        "/api/v1/tokens",
        json={"name": "shop", "role": "ingest", "trigger_keys": ["orders"]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    assert made.json()["role"] == "ingest"
    assert made.json()["trigger_keys"] == ["orders"]
    ingest = {"Authorization": f"Bearer {made.json()['token']}"}
    sent = await client.post(
        "/api/v1/events", json={"trigger_key": "orders", "payload": {}}, headers=ingest
    )
    assert sent.status_code == 202, sent.text
    refused = await client.post(
        "/api/v1/events", json={"trigger_key": "refunds", "payload": {}}, headers=ingest
    )
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["field"] == "trigger_key"
    assert (await client.get("/api/v1/events", headers=ingest)).status_code == 403
    listed = (await client.get("/api/v1/tokens", headers=admin)).json()["items"]
    assert {item["name"]: item["role"] for item in listed}["shop"] == "ingest"
    mistaken = await client.post(
        "/api/v1/tokens",
        json={"name": "x", "role": "viewer", "trigger_keys": ["orders"]},
        headers=admin,
    )
    assert mistaken.status_code == 422
    assert "ingest" in mistaken.json()["detail"]
    unknown = await client.post(
        "/api/v1/tokens", json={"name": "x", "role": "superuser"}, headers=admin
    )
    assert unknown.status_code == 400


async def test_api_tokens_entries_may_name_their_role(
    settings_for: Callable[..., Settings],
) -> None:
    viewer_token = "sy_a-configured-viewer-token"
    app = create_app(
        settings_for(roles=frozenset({Role.API}), api_tokens=(f"viewer:{viewer_token}", API_TOKEN))
    )
    async with serving(app) as client:
        viewer = {"Authorization": f"Bearer {viewer_token}"}
        assert (await client.get("/api/v1/workflows", headers=viewer)).status_code == 200
        refused = await client.post("/api/v1/workflows", json={"name": "w"}, headers=viewer)
        assert refused.status_code == 403
        admin = {"Authorization": f"Bearer {API_TOKEN}"}
        assert (
            await client.post("/api/v1/workflows", json={"name": "w"}, headers=admin)
        ).status_code == 201
        prefixed = {"Authorization": f"Bearer viewer:{viewer_token}"}
        assert (await client.get("/api/v1/workflows", headers=prefixed)).status_code == 401
