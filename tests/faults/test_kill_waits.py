"""Workers SIGKILLed at random moments while many executions wait for events and the events
arrive (some before their wait begins, every answer twice): every wait resumes exactly once,
with its first answer, and every short timeout fires once and takes its `timeout` branch.

Each start event starts two executions: "Wait for answer" (answered through events with the
execution's correlation key; a year-long timeout it must never reach) and "Wait for silence"
(never answered; a one-second timeout with a `timeout` edge). Each ends in one task, so a wait
resumed twice, or a timeout fired twice, would show as a second task or a second result.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from tests.faults.drill import KILL_DRILL_WORKER, Process, sized, wait_until_drained
from tests.support.credentials import API_TOKEN

START, ANSWERS, SILENCE = "wait-drill", "wait-drill-answers", "wait-drill-silence"


def task(key: str, title: str) -> dict[str, Any]:
    return {
        "key": key,
        "kind": "action",
        "action_key": "task_management",
        "cfg": {"operation": "create", "title": title},
    }


def waiting_workflow(name: str, trigger_key: str, timeout_seconds: float) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"key": "wait", "kind": "wait_for_event",
             "cfg": {"trigger_key": trigger_key, "correlation_key": "n-{{ trigger.n }}",
                     "timeout_seconds": timeout_seconds}},
            task("answered", "answered {{ trigger.n }} {{ steps.wait.output.answer }}"),
            task("expired", "expired {{ trigger.n }}"),
        ],
        "edges": [{"from": "wait", "to": "answered"},
                  {"from": "wait", "to": "expired", "branch_key": "timeout"}],
        "subscriptions": [{"trigger_key": START, "filter_conditions": {}}],
    }  # fmt: skip


async def send_all(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> None:
    semaphore = asyncio.Semaphore(16)

    async def send(body: dict[str, Any]) -> None:
        async with semaphore:
            response = await client.post("/api/v1/events", json=body)
            assert response.status_code == 202, response.text

    await asyncio.gather(*(send(body) for body in bodies))


async def answer_everything(client: httpx.AsyncClient, count: int) -> None:
    """Every first answer, then every second one (which must resume nothing)."""
    for answer in ("first", "second"):
        await send_all(
            client,
            [
                {"trigger_key": ANSWERS, "correlation_key": f"n-{n}",
                 "payload": {"n": n, "answer": answer}}
                for n in range(count)
            ],
        )  # fmt: skip


async def test_workers_killed_while_executions_wait_resume_each_wait_once(
    switchyard_check: Callable[[str], str],
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
) -> None:
    count, kills = sized(40, 2000), sized(3, 10)
    api = processes(database_dsn, "api", "api")
    await asyncio.to_thread(api.wait_ready)
    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    ) as client:
        for key in (START, ANSWERS, SILENCE):
            registered = await client.post(
                "/api/v1/registry/triggers", json={"trigger_key": key, "type": "event"}
            )
            assert registered.status_code == 201, registered.text
        for document in (
            waiting_workflow("Wait for answer", ANSWERS, 366 * 24 * 3600),
            waiting_workflow("Wait for silence", SILENCE, 1),
        ):
            imported = await client.post(
                "/api/v1/workflows/import", params={"publish": "true"}, json=document
            )
            assert imported.status_code == 201, imported.text
        await send_all(client, [{"trigger_key": START, "payload": {"n": n}} for n in range(count)])
        workers = [processes(database_dsn, "worker", **KILL_DRILL_WORKER) for _ in range(2)]
        await asyncio.gather(*(asyncio.to_thread(worker.wait_ready) for worker in workers))
        started = time.monotonic()
        rng = random.Random(11)  # noqa: S311 - kill moments, not cryptography

        async def kill_now_and_then() -> None:
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.2, 1.2))
                victim = rng.choice(workers)
                victim.kill()
                workers.remove(victim)
                replacement = processes(database_dsn, "worker", **KILL_DRILL_WORKER)
                await asyncio.to_thread(replacement.wait_ready)
                workers.append(replacement)

        await asyncio.gather(answer_everything(client, count), kill_now_and_then())

    await wait_until_drained(connection)
    drained = time.monotonic() - started

    rows = await connection.fetch("SELECT status, count(*) FROM workflow_execution GROUP BY status")
    statuses = {row["status"]: row["count"] for row in rows}
    assert statuses == {"SUCCESS": 2 * count}, statuses
    titles = sorted(row["title"] for row in await connection.fetch("SELECT title FROM tasks"))
    expected = sorted(
        [f"answered {n} first" for n in range(count)] + [f"expired {n}" for n in range(count)]
    )
    assert titles == expected  # each wait went on once: with its first answer, or its timeout
    resumed_twice = await connection.fetch(
        """SELECT e.id, count(ev.id) AS events
           FROM workflow_execution e
           JOIN workflow_definition d ON d.id = e.workflow_id AND d.name = 'Wait for answer'
           JOIN trigger_event ev ON ev.trigger_key = $1
                AND ev.outcome_detail LIKE '%' || e.id::text || '%'
           GROUP BY e.id HAVING count(ev.id) > 1""",
        ANSWERS,
    )
    assert resumed_twice == []  # no execution's wait was resumed by two events
    left = await connection.fetchval("SELECT count(*) FROM job WHERE kind = 'wait_timeout'")
    assert left == 0  # fired, or withdrawn once the answer came
    for worker in workers:
        assert worker.terminate(timeout=15) < 15
    switchyard_check(database_dsn)
    print(  # noqa: T201 - the scenario's figures, for the README at full size
        f"\nkill waits: {2 * count} executions waiting, {kills} SIGKILLs, {2 * count} answers, "
        f"drained in {drained:.1f} s"
    )
