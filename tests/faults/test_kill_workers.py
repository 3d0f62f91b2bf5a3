"""Workers SIGKILLed at random moments while they drain a backlog: every execution succeeds,
each task is created once, and the peer sees every idempotency key (at least once: a step whose
worker died after the call and before its record runs again, with the same key)."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable

import asyncpg
import httpx

from tests.faults.drill import KILL_DRILL_WORKER, Process, sized, wait_until_drained
from tests.support.credentials import API_TOKEN
from tests.support.peers import HttpPeer


def workflow(peer_url: str) -> dict[str, object]:
    return {
        "name": "Kill drill",
        "steps": [
            {"key": "check", "kind": "condition", "cfg": {"expression": "trigger.n >= 0"}},
            {"key": "task", "kind": "action", "action_key": "task_management",
             "cfg": {"operation": "create", "title": "Lead {{ trigger.n }}"}},
            {"key": "call", "kind": "action", "action_key": "http_request",
             "cfg": {"method": "POST", "url": f"{peer_url}/record",
                     "json": {"n": "{{ trigger.n }}"}}},
        ],
        "edges": [{"from": "check", "to": "task", "branch_key": "true"},
                  {"from": "task", "to": "call"}],
        "subscriptions": [{"trigger_key": "kill-drill", "filter_conditions": {}}],
    }  # fmt: skip


async def send_events(client: httpx.AsyncClient, count: int) -> None:
    semaphore = asyncio.Semaphore(16)

    async def send(n: int) -> None:
        async with semaphore:
            body = {"trigger_key": "kill-drill", "payload": {"n": n}, "idempotency_key": f"e{n}"}
            response = await client.post("/api/v1/events", json=body)
            assert response.status_code == 202, response.text

    await asyncio.gather(*(send(n) for n in range(count)))


async def test_workers_killed_during_the_drain_lose_and_duplicate_nothing(
    switchyard_check: Callable[[str], str],
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
    http_peer: HttpPeer,
) -> None:
    executions, kills = sized(60, 10_000), sized(3, 10)
    http_peer.reply("/record", 200, json={"ok": True})
    api = processes(database_dsn, "api", "api")
    await asyncio.to_thread(api.wait_ready)
    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    ) as client:
        await client.post(
            "/api/v1/registry/triggers", json={"trigger_key": "kill-drill", "type": "event"}
        )
        imported = await client.post(
            "/api/v1/workflows/import",
            params={"publish": "true"},
            json=workflow(http_peer.base_url),
        )
        assert imported.status_code == 201, imported.text
        await send_events(client, executions)

    workers = [processes(database_dsn, "worker", **KILL_DRILL_WORKER) for _ in range(2)]
    await asyncio.gather(*(asyncio.to_thread(worker.wait_ready) for worker in workers))
    started = time.monotonic()
    rng = random.Random(7)  # noqa: S311 - kill moments, not cryptography
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.2, 1.2))
        victim = rng.choice(workers)
        victim.kill()
        workers.remove(victim)
        replacement = processes(database_dsn, "worker", **KILL_DRILL_WORKER)
        await asyncio.to_thread(replacement.wait_ready)
        workers.append(replacement)

    await wait_until_drained(connection)
    drained = time.monotonic() - started

    rows = await connection.fetch("SELECT status, count(*) FROM workflow_execution GROUP BY status")
    statuses = {row["status"]: row["count"] for row in rows}
    assert statuses == {"SUCCESS": executions}, statuses
    tasks = await connection.fetchval("SELECT count(*) FROM tasks")
    assert tasks == executions
    keys = collections.Counter(
        r.headers["idempotency-key"] for r in http_peer.requests_to("/record")
    )
    assert len(keys) == executions  # every call reached the peer with its step's key
    repeated = sum(1 for seen in keys.values() if seen > 1)
    for worker in workers:
        assert worker.terminate(timeout=15) < 15
    switchyard_check(database_dsn)
    print(  # noqa: T201 - the scenario's figures, for the README at full size
        f"\nkill workers: {executions} executions, {kills} SIGKILLs, drained in {drained:.1f} s;"
        f" tasks {tasks}; peer keys {len(keys)}, seen twice {repeated}"
    )
