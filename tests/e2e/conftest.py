"""End-to-end tests: the API and a worker in one app on this test's database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.conftest import API_TOKEN
from tests.support.apps import serving
from tests.support.waiting import eventually

FINISHED = {"SUCCESS", "FAILED", "CANCELLED"}
WAIT_SECONDS = 20.0


@pytest.fixture
def engine_settings(settings_for: Callable[..., Settings]) -> Settings:
    """The settings of `engine_client`'s app (for `tests.support.invariants.assert_invariants`)."""
    return settings_for(
        roles=frozenset({Role.API, Role.WORKER}),
        job_poll_interval_seconds=0.2,
        http_allowed_hosts=("127.0.0.1",),
    )


@pytest.fixture
async def engine_client(engine_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(engine_settings), token=API_TOKEN) as client:
        yield client


async def import_published(client: httpx.AsyncClient, document: dict[str, Any]) -> str:
    response = await client.post(
        "/api/v1/workflows/import", params={"publish": "true"}, json=document
    )
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


async def run(
    client: httpx.AsyncClient, workflow_id: str, data: dict[str, Any] | None = None
) -> str:
    response = await client.post(f"/api/v1/workflows/{workflow_id}/run", json={"input": data or {}})
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


async def wait_for(
    client: httpx.AsyncClient, execution_id: str, statuses: set[str] = FINISHED
) -> dict[str, Any]:
    """The execution once its status is one of `statuses`."""

    async def execution() -> dict[str, Any]:
        body: dict[str, Any] = (await client.get(f"/api/v1/executions/{execution_id}")).json()
        return body

    return await eventually(
        execution,
        until=lambda body: body["status"] in statuses,
        what=f"execution {execution_id} in {sorted(statuses)}",
        within=WAIT_SECONDS,
        every=0.05,
    )


def steps_by_key(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step_key"]: step for step in execution["steps"]}


from tests.support.broken_peers import broken_answer_peer  # noqa: E402, F401 - a fixture
from tests.support.peers import (  # noqa: E402, F401 - fixtures, found by name
    _http_peer,
    _other_http_peer,
    _smtp_quit_refusing_server,
    _smtp_server,
    http_peer,
    other_http_peer,
    smtp_quit_refusing_server,
    smtp_server,
)


async def health_when(
    client: httpx.AsyncClient, trigger_key: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """A trigger's health once `ready(health)` holds (counts are flushed about once a second)."""

    async def health() -> dict[str, Any]:
        items = (await client.get("/api/v1/registry/triggers")).json()["items"]
        found: dict[str, Any] = next(
            (t["health"] for t in items if t["trigger_key"] == trigger_key), {}
        )
        return found

    return await eventually(
        health,
        until=lambda found: bool(found) and ready(found),
        what=f"trigger {trigger_key} health",
        within=WAIT_SECONDS,
        every=0.1,
    )
