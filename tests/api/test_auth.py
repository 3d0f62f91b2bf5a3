from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from piccolo.engine.postgres import PostgresEngine

from config.settings import Role, Settings, SettingsError, load_settings
from server.app import create_app
from server.db.tokens import create_token
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN


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
        engine: PostgresEngine = app.state.database
        rows = await engine.run_ddl("SELECT token_hash FROM api_token")
        assert [r["token_hash"] for r in rows] != [token]
        assert all(token not in r["token_hash"] for r in rows)


async def test_malformed_query_values_are_problem_details_naming_the_field(
    api_client: httpx.AsyncClient,
) -> None:
    response = await api_client.get("/api/v1/workflows", params={"limit": "many"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "limit"
    response = await api_client.get("/api/v1/workflows", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


METRICS_TOKEN = "metrics-scraper-token-0123"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {API_TOKEN}"],
)
async def test_metrics_need_the_metrics_token_when_one_is_set(
    settings_for: Callable[..., Settings], authorization: str | None
) -> None:
    app = create_app(settings_for(roles=frozenset({Role.WORKER}), metrics_token=METRICS_TOKEN))
    async with serving(app) as client:
        headers = {"Authorization": authorization} if authorization is not None else {}
        refused = await client.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "METRICS_TOKEN" in refused.json()["detail"]
        assert "switchyard_" not in refused.text
        scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scraped.status_code == 200
        assert "switchyard_queue_jobs" in scraped.text
        for probe in ("/health", "/ready"):  # kubelet probes carry no credentials
            assert (await client.get(probe, headers=headers)).status_code == 200


def test_a_short_metrics_token_stops_start_up() -> None:
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        load_settings({"METRICS_TOKEN": "short"})
