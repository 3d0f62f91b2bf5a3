"""While the database is away the API answers 503 with Retry-After on every route, and it
recovers by itself when the database comes back (issue 11's second defect)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.db_proxy import database_proxy
from tests.support.waiting import eventually


async def _requests(client: httpx.AsyncClient, workflow_id: str) -> list[httpx.Response]:
    return [
        await client.get("/api/v1/workflows"),
        await client.get(f"/api/v1/workflows/{workflow_id}"),
        await client.get("/api/v1/executions"),
        await client.post("/api/v1/events", json={"trigger_key": "away", "payload": {}}),
        await client.post("/hooks/away", json={"n": 1}),
    ]


async def test_every_route_answers_503_with_retry_after_while_the_database_is_away(
    settings_for: Callable[..., Settings], database_dsn: str
) -> None:
    async with database_proxy(database_dsn) as proxy:
        app = create_app(settings_for(database_url=proxy.dsn, roles=frozenset({Role.API})))
        async with serving(app, token=API_TOKEN) as client:
            await client.post(
                "/api/v1/registry/triggers", json={"trigger_key": "away", "type": "event"}
            )
            created = await client.post("/api/v1/workflows", json={"name": "Away"})
            workflow_id = created.json()["id"]
            assert all(r.status_code < 500 for r in await _requests(client, workflow_id))

            await proxy.cut()
            answers = await _requests(client, workflow_id)
            assert [r.status_code for r in answers] == [503] * len(answers), [
                r.text for r in answers
            ]
            for answer in answers:
                assert answer.headers["retry-after"] == "5"
                assert answer.headers["content-type"] == "application/problem+json"
                assert "database" in answer.json()["detail"]
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/ready")).status_code == 503

            await proxy.restore()
            await eventually(
                lambda: client.get("/api/v1/workflows"),
                until=lambda answer: answer.status_code == 200,
                what="the API recovered",
                every=0.1,
            )
            assert all(r.status_code < 500 for r in await _requests(client, workflow_id))
