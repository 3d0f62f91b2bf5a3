"""`GET /jobs/dead` and `POST /jobs/{id}/requeue` (server/api/jobs.py) on a real queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar
from litestar.di import Provide
from piccolo.engine.postgres import PostgresEngine

from server.api import problems
from server.api.jobs import JobController
from server.db.pool import asyncpg_pool
from server.queue import client
from server.queue.jobs import NewJob


@pytest.fixture
async def http(engine: PostgresEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = Litestar(
        route_handlers=[JobController],
        dependencies={"pool": Provide(lambda: asyncpg_pool(engine), sync_to_thread=False)},
        plugins=[problems.PLUGIN],
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar types its ASGI scopes precisely
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as opened:
        yield opened


async def bury(engine: PostgresEngine, kinds: list[str]) -> list[int]:
    async with asyncpg_pool(engine).acquire() as connection:
        await client.enqueue_jobs(connection, [NewJob(kind=kind) for kind in kinds])
        claimed = await client.claim_jobs(
            connection, worker_id="w", limit=len(kinds), lease_seconds=30
        )
        for job in sorted(claimed, key=lambda job: job.id):
            await client.mark_job_dead(connection, job.lease, error=f"{job.kind} failed")
    return sorted(job.id for job in claimed)


async def test_dead_jobs_are_listed_page_by_page(
    engine: PostgresEngine, http: httpx.AsyncClient
) -> None:
    ids = await bury(engine, ["a", "b", "c"])
    first = (await http.get("/jobs/dead", params={"limit": 2})).json()
    second = (await http.get("/jobs/dead", params={"cursor": first["next_cursor"]})).json()
    listed = [job["id"] for job in first["items"] + second["items"]]
    assert sorted(listed) == ids
    assert len(first["items"]) == 2
    assert second["next_cursor"] is None
    assert {job["state"] for job in first["items"]} == {"dead"}
    assert first["items"][0]["last_error"].endswith("failed")


async def test_a_bad_cursor_is_a_400_problem(http: httpx.AsyncClient) -> None:
    response = await http.get("/jobs/dead", params={"cursor": "nonsense"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_requeue_queues_a_dead_job_and_refuses_others(
    engine: PostgresEngine, http: httpx.AsyncClient
) -> None:
    [job_id] = await bury(engine, ["email"])
    response = await http.post(f"/jobs/{job_id}/requeue", params={"attempts": 2})
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["state"], body["attempts"], body["max_attempts"]) == (
        job_id,
        "queued",
        1,
        3,
    )
    again = await http.post(f"/jobs/{job_id}/requeue")
    assert again.status_code == 409
    assert "not dead" in again.json()["detail"]
    missing = await http.post("/jobs/424242/requeue")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "job 424242 not found"
