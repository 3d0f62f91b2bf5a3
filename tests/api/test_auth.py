from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from piccolo.engine.postgres import PostgresEngine

from config.settings import Role, Settings
from server.app import create_app
from server.db.tokens import create_token
from tests.apps import serving


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong-token", "Basic dXNlcjpwYXNz", "bearer  "],
)
async def test_api_refuses_requests_without_a_valid_bearer_token(
    api_client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    api_client.headers.pop("Authorization")
    response = await api_client.get("/api/v1/workflows", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401
    assert "create-token" in body["detail"]


async def test_health_endpoints_need_no_token(api_client: httpx.AsyncClient) -> None:
    api_client.headers.pop("Authorization")
    for path in ("/health", "/ready", "/metrics"):
        assert (await api_client.get(path)).status_code == 200


async def test_a_created_token_is_accepted_and_only_its_hash_is_stored(
    settings_for: Callable[..., Settings],
) -> None:
    app = create_app(settings_for(roles=frozenset({Role.API}), api_tokens=()))
    async with serving(app) as client:
        token = await create_token("test")
        response = await client.get(
            "/api/v1/workflows", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        engine: PostgresEngine = app.state.engine
        rows = await engine.run_ddl("SELECT token_hash FROM api_token")
        assert [r["token_hash"] for r in rows] != [token]
        assert all(token not in r["token_hash"] for r in rows)


async def test_malformed_query_values_are_problem_details_naming_the_field(
    api_client: httpx.AsyncClient,
) -> None:
    response = await api_client.get("/api/v1/workflows", params={"limit": "many"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["key"] == "limit"
    response = await api_client.get("/api/v1/workflows", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]
