"""The worker's LISTEN connection terminated by the server (pg_terminate_backend), again and
again while runs arrive: no run waits longer than the polling interval meanwhile, and the
listener comes back by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial

import asyncpg
import httpx

from server.queue.listener import LISTENER_APPLICATION_NAME
from tests.faults.drill import Process, sized
from tests.support.credentials import API_TOKEN
from tests.support.waiting import eventually

POLL_SECONDS = 1.0
TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1"
LISTENING = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
DOCUMENT = {
    "name": "Listener drill",
    "steps": [{"key": "shape", "kind": "action", "action_key": "transform",
               "cfg": {"output": {"ok": True}}}],
}  # fmt: skip


async def test_a_terminated_listener_comes_back_and_polling_covers_the_gap(
    switchyard_check: Callable[[str], str],
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
) -> None:
    server = processes(database_dsn, "api,worker", "server",
                       JOB_POLL_INTERVAL_SECONDS=str(POLL_SECONDS))  # fmt: skip
    await asyncio.to_thread(server.wait_ready)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    ) as client:
        imported = await client.post(
            "/api/v1/workflows/import", params={"publish": "true"}, json=DOCUMENT
        )
        workflow_id = imported.json()["id"]
        waits: list[float] = []
        for _ in range(sized(4, 20)):
            assert await connection.fetchval(TERMINATE, LISTENER_APPLICATION_NAME)
            sent = time.monotonic()
            started = await client.post(f"/api/v1/workflows/{workflow_id}/run", json={"input": {}})
            execution_id = started.json()["execution_id"]
            await eventually(
                partial(_status, client, execution_id),
                until=lambda status: status == "SUCCESS",
                what="the run picked up and finished",
                within=10 * POLL_SECONDS,
                every=0.05,
            )
            waits.append(time.monotonic() - sent)
            await eventually(
                lambda: connection.fetchval(LISTENING, LISTENER_APPLICATION_NAME),
                what="the listener back (its connections counted)",
                every=0.1,
            )
    assert max(waits) < POLL_SECONDS + 1.5, waits
    switchyard_check(database_dsn)


async def _status(client: httpx.AsyncClient, execution_id: str) -> str:
    status: str = (await client.get(f"/api/v1/executions/{execution_id}")).json()["status"]
    return status
