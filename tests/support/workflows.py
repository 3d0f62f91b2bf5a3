"""Drive workflows through the API as a client does: import and publish a document, run it,
and wait for an execution or a trigger's health to reach a state (for the e2e tests and the
integration tests that need a real run)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Final

import httpx

from tests.support.waiting import eventually

FINISHED: Final = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
WAIT_SECONDS: Final = 20.0


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
    client: httpx.AsyncClient, execution_id: str, statuses: Collection[str] = FINISHED
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
