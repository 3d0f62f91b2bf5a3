"""A worker frozen past its lease, a worker stopped mid-step, and a burst of duplicated
deliveries with no worker at all: each step's effect is recorded once and nothing is stranded."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from tests.faults.drill import Process, sized
from tests.support.credentials import API_TOKEN
from tests.support.peers import HttpPeer, RecordedRequest, Reply
from tests.support.waiting import eventually

WAIT_SECONDS = 120.0
WORKER = {"JOB_LEASE_SECONDS": "1", "JOB_POLL_INTERVAL_SECONDS": "0.2"}


def slow_then_task(peer_url: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"key": "call", "kind": "action", "action_key": "http_request",
             "cfg": {"method": "POST", "url": f"{peer_url}/slow",
                     "retry": {"max_attempts": 5, "timeout_seconds": 30}}},
            {"key": "task", "kind": "action", "action_key": "task_management",
             "cfg": {"operation": "create", "title": "after {{ steps.call.output.status }}"}},
        ],
        "edges": [{"from": "call", "to": "task"}],
    }  # fmt: skip


async def import_slow_workflow(
    api: httpx.AsyncClient, peer: HttpPeer, name: str, *, seconds: float
) -> str:
    """Publish `slow_then_task` against `peer`, whose /slow answers after `seconds`."""

    def slow(request: RecordedRequest) -> Reply:
        time.sleep(seconds)
        return Reply(status=200, body=b"{}", headers={"Content-Type": "application/json"})

    peer.respond("/slow", slow)
    imported = await api.post(
        "/api/v1/workflows/import",
        params={"publish": "true"},
        json=slow_then_task(peer.base_url, name),
    )
    assert imported.status_code == 201, imported.text
    workflow_id: str = imported.json()["id"]
    return workflow_id


@pytest.fixture
async def api(
    processes: Callable[..., Process], database_dsn: str
) -> AsyncIterator[httpx.AsyncClient]:
    server = processes(database_dsn, "api", "api")
    await asyncio.to_thread(server.wait_ready)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    ) as client:
        yield client


async def execution(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/api/v1/executions/{execution_id}")).json()
    return body


async def test_a_frozen_worker_that_wakes_after_its_lease_changes_nothing(
    switchyard_check: Callable[[str], str],
    api: httpx.AsyncClient,
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
    http_peer: HttpPeer,
) -> None:
    workflow_id = await import_slow_workflow(api, http_peer, "Zombie", seconds=2.0)
    zombie = processes(database_dsn, "worker", "zombie", **WORKER)
    await asyncio.to_thread(zombie.wait_ready)
    started = await api.post(f"/api/v1/workflows/{workflow_id}/run", json={"input": {}})
    execution_id = started.json()["execution_id"]

    async def called(times: int) -> bool:
        return len(http_peer.requests_to("/slow")) >= times

    await eventually(lambda: called(1), what="the first call", within=WAIT_SECONDS, every=0.1)
    zombie.signal(signal.SIGSTOP)  # frozen mid-step, holding the lease it can no longer renew
    rescuer = processes(database_dsn, "worker", "rescuer", **WORKER)
    await asyncio.to_thread(rescuer.wait_ready)

    async def succeeded() -> bool:
        return bool((await execution(api, execution_id))["status"] == "SUCCESS")

    await eventually(
        succeeded, what="the run finished by the other worker", within=WAIT_SECONDS, every=0.1
    )
    before = await execution(api, execution_id)
    zombie.signal(signal.SIGCONT)  # wakes, finishes its call, tries to record it
    await eventually(
        lambda: "job_lease_lost" in zombie.log(),
        what="the woken worker reporting its lost lease",
        within=WAIT_SECONDS,
        every=0.1,
    )
    after = await execution(api, execution_id)
    assert after == before  # the late completion was fenced out
    assert [step["step_key"] for step in after["steps"]] == ["call", "task"]
    assert await connection.fetchval("SELECT count(*) FROM tasks") == 1
    assert len(http_peer.requests_to("/slow")) == 2  # the step ran again, with the same key
    keys = {request.headers["idempotency-key"] for request in http_peer.requests_to("/slow")}
    assert len(keys) == 1
    zombie.terminate(15)
    switchyard_check(database_dsn)


async def test_sigterm_during_long_steps_stops_claiming_and_exits_within_the_grace(
    switchyard_check: Callable[[str], str],
    api: httpx.AsyncClient,
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
    http_peer: HttpPeer,
) -> None:
    workflow_id = await import_slow_workflow(api, http_peer, "Stopping", seconds=1.5)
    runs = sized(20, 200)
    for _ in range(runs):
        await api.post(f"/api/v1/workflows/{workflow_id}/run", json={"input": {}})
    worker = processes(database_dsn, "worker", "stopping", WORKER_CONCURRENCY="4", **WORKER)
    await asyncio.to_thread(worker.wait_ready)

    async def busy() -> bool:
        return len(http_peer.requests_to("/slow")) >= 4

    await eventually(busy, what="four steps in flight", within=WAIT_SECONDS, every=0.1)
    exit_seconds = await asyncio.to_thread(worker.terminate, 15)
    assert exit_seconds < 5 + 3  # SHUTDOWN_GRACE_SECONDS is 5
    calls_at_exit = len(http_peer.requests_to("/slow"))
    assert calls_at_exit <= 8  # it stopped claiming: at most the in-flight ones and a chain
    finisher = processes(database_dsn, "worker", "finisher", **WORKER)
    await asyncio.to_thread(finisher.wait_ready)

    async def all_done() -> bool:
        left = await connection.fetchval(
            "SELECT count(*) FROM workflow_execution WHERE status <> 'SUCCESS'"
        )
        return bool(left == 0)

    await eventually(
        all_done, what="every run finished by the next worker", within=WAIT_SECONDS, every=0.1
    )
    assert await connection.fetchval("SELECT count(*) FROM tasks") == runs
    switchyard_check(database_dsn)


async def test_a_burst_of_duplicated_deliveries_with_no_worker_runs_each_delivery_once(
    switchyard_check: Callable[[str], str],
    api: httpx.AsyncClient,
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
) -> None:
    hook = await api.post(
        "/api/v1/webhooks", json={"trigger_key": "burst", "path": "burst", "auth": {"type": "none"}}
    )
    assert hook.status_code == 201, hook.text
    document = {
        "name": "Burst",
        "steps": [{"key": "shape", "kind": "action", "action_key": "transform",
                   "cfg": {"output": {"id": "{{ trigger.id }}"}}}],
        "subscriptions": [{"trigger_key": "burst", "filter_conditions": {}}],
    }  # fmt: skip
    imported = await api.post("/api/v1/workflows/import", params={"publish": "true"}, json=document)
    assert imported.status_code == 201, imported.text
    unique, copies = sized(300, 3000), 3
    semaphore = asyncio.Semaphore(24)

    async def deliver(delivery: int) -> int:
        async with semaphore:
            response = await api.post(
                "/hooks/burst", json={"id": delivery}, headers={"Idempotency-Key": f"d{delivery}"}
            )
            return response.status_code

    answers = await asyncio.gather(
        *(deliver(delivery) for _ in range(copies) for delivery in range(unique))
    )
    assert set(answers) <= {200, 202}, set(answers)
    worker = processes(database_dsn, "worker", "late", **WORKER)
    await asyncio.to_thread(worker.wait_ready)

    async def drained() -> bool:
        done = await connection.fetchval(
            "SELECT count(*) FROM workflow_execution WHERE status = 'SUCCESS'"
        )
        return bool(done >= unique)

    await eventually(drained, what="the backlog drained", within=WAIT_SECONDS, every=0.1)
    # With no job left, no step can run again: the counts below are final.
    await eventually(
        lambda: connection.fetchval("SELECT count(*) FROM job"),
        until=lambda jobs: jobs == 0,
        what="the queue empty (last value: jobs left)",
        within=WAIT_SECONDS,
        every=0.1,
    )
    rows = await connection.fetch(
        "SELECT (s.result_data->>'id')::int AS id, count(*) FROM step_execution s GROUP BY 1"
    )
    per_delivery = {row["id"]: row["count"] for row in rows}
    assert per_delivery == dict.fromkeys(range(unique), 1)
    switchyard_check(database_dsn)
