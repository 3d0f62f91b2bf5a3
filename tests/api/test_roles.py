from __future__ import annotations

from collections.abc import Callable

import httpx

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN


async def test_worker_only_process_serves_health_but_not_the_api(
    settings_for: Callable[..., Settings],
) -> None:
    app = create_app(settings_for(roles=frozenset({Role.WORKER})))
    async with serving(app, token=API_TOKEN) as client:
        assert (await client.get("/health")).json() == {"status": "ok", "roles": ["worker"]}
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        response = await client.get("/api/v1/workflows")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


async def test_api_role_serves_the_api(settings_for: Callable[..., Settings]) -> None:
    app = create_app(settings_for(roles=frozenset({Role.API})))
    async with serving(app, token=API_TOKEN) as client:
        response = await client.get("/api/v1/workflows")
        assert response.status_code == 200
        assert response.json() == {"items": [], "next_cursor": None}


async def test_scheduler_only_process_is_ready_and_has_no_api(
    settings_for: Callable[..., Settings],
) -> None:
    app = create_app(settings_for(roles=frozenset({Role.SCHEDULER})))
    async with serving(app) as client:
        assert (await client.get("/ready")).json()["status"] == "ready"
        assert (await client.get("/api/v1/registry/actions")).status_code == 404


async def test_openapi_document_is_served(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert "/api/v1/workflows" in response.json()["paths"]
