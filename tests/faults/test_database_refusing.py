"""The database refusing work for a while (every statement cancelled by a 1 ms statement_timeout,
as a database out of disk or overloaded would refuse it): clear 503 answers, no half-written
state, and every accepted event runs once the limit is lifted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import httpx

from tests.faults.drill import Process
from tests.support.credentials import API_TOKEN
from tests.support.waiting import eventually

RECONNECT = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
RUNS = (
    "SELECT (e.payload->>'n')::int AS n, x.status,"
    " (SELECT count(*) FROM step_execution s WHERE s.execution_id = x.id) AS steps"
    " FROM trigger_event e JOIN workflow_execution x ON x.trigger_event_id = e.id"
)
DOCUMENT = {
    "name": "Refusing drill",
    "steps": [
        {"key": "task", "kind": "action", "action_key": "task_management",
         "cfg": {"operation": "create", "title": "Refused {{ trigger.n }}"}},
        {"key": "shape", "kind": "action", "action_key": "transform",
         "cfg": {"output": {"n": "{{ trigger.n }}"}}},
    ],
    "edges": [{"from": "task", "to": "shape"}],
    "subscriptions": [{"trigger_key": "refusing", "filter_conditions": {}}],
}  # fmt: skip


async def test_a_database_that_refuses_statements_gets_503s_and_nothing_half_written(
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
    switchyard_check: Callable[[str], str],
) -> None:
    server = processes(database_dsn, "api,worker", "server", JOB_LEASE_SECONDS="3")
    await asyncio.to_thread(server.wait_ready)
    database = await connection.fetchval("SELECT current_database()")
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    ) as client:
        await client.post(
            "/api/v1/registry/triggers", json={"trigger_key": "refusing", "type": "event"}
        )
        imported = await client.post("/api/v1/workflows/import", params={"publish": "true"},
                                     json=DOCUMENT)  # fmt: skip
        assert imported.status_code == 201, imported.text
        accepted: list[int] = []
        for n in range(10):  # some runs in flight when the limit comes down
            body = {"trigger_key": "refusing", "payload": {"n": n}, "idempotency_key": f"r{n}"}
            assert (await client.post("/api/v1/events", json=body)).status_code == 202
            accepted.append(n)

        await connection.execute(f'ALTER DATABASE "{database}" SET statement_timeout = 1')
        await connection.execute(RECONNECT)  # the server's sessions come back with the limit
        refused = []
        for n in range(10, 20):
            body = {"trigger_key": "refusing", "payload": {"n": n}, "idempotency_key": f"r{n}"}
            answer = await client.post("/api/v1/events", json=body)
            if answer.status_code == 202:
                accepted.append(n)
            else:
                refused.append(answer)
        await connection.execute(f'ALTER DATABASE "{database}" RESET statement_timeout')
        await connection.execute(RECONNECT)
        assert refused, "the database did not refuse anything"
        for answer in refused:
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"]

        rows = await eventually(
            lambda: connection.fetch(RUNS),
            until=lambda rows: rows and all(row["status"] == "SUCCESS" for row in rows),
            what="every run succeeded",
            within=120,
            every=0.5,
        )
    assert {row["n"] for row in rows} >= set(accepted)  # every accepted event ran
    assert {row["steps"] for row in rows} == {2}  # whole runs, nothing half-written
    assert await connection.fetchval("SELECT count(*) FROM tasks") == len(rows)
    assert server.terminate(timeout=15) < 15
    switchyard_check(database_dsn)
