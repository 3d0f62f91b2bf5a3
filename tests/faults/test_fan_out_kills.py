"""Workers SIGKILLed in the middle of fan-outs: every foreach starts each item's child exactly
once, never more than `max_concurrency` at a time, collects every output in item order, and the
parents all succeed; each child's task is created once."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from tests.faults.drill import KILL_DRILL_WORKER, Process, sized, unfinished, wait_until_drained
from tests.support.credentials import API_TOKEN

MAX_CONCURRENCY = 5

CHILD: dict[str, Any] = {
    "name": "Fan-out item",
    "steps": [
        {"key": "check", "kind": "condition", "cfg": {"expression": "trigger.n >= 0"}},
        {"key": "task", "kind": "action", "action_key": "task_management",
         "cfg": {"operation": "create", "title": "Item {{ trigger.parent }}/{{ trigger.n }}"}},
    ],
    "edges": [{"from": "check", "to": "task", "branch_key": "true"}],
}  # fmt: skip
PARENT: dict[str, Any] = {
    "name": "Fan-out drill",
    "steps": [
        {"key": "each", "kind": "foreach",
         "cfg": {"items": "{{ trigger.numbers }}", "workflow": "Fan-out item",
                 "input": {"n": "{{ item }}", "parent": "{{ trigger.p }}"},
                 "max_concurrency": MAX_CONCURRENCY}},
    ],
}  # fmt: skip


async def test_workers_killed_during_fan_outs_lose_and_duplicate_no_child(
    switchyard_check: Callable[[str], str],
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
) -> None:
    parents, items, kills = sized(20, 40), sized(60, 500), sized(4, 10)
    api = processes(database_dsn, "api", "api")
    await asyncio.to_thread(api.wait_ready)
    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    ) as client:
        ids = []
        for document in (CHILD, PARENT):
            imported = await client.post(
                "/api/v1/workflows/import", params={"publish": "true"}, json=document
            )
            assert imported.status_code == 201, imported.text
            ids.append(imported.json()["id"])
        parent_workflow = ids[-1]
        for p in range(parents):
            response = await client.post(
                f"/api/v1/workflows/{parent_workflow}/run",
                json={"input": {"p": p, "numbers": list(range(items))}},
            )
            assert response.status_code == 202, response.text

    workers = [processes(database_dsn, "worker", **KILL_DRILL_WORKER) for _ in range(2)]
    await asyncio.gather(*(asyncio.to_thread(worker.wait_ready) for worker in workers))
    started = time.monotonic()
    rng = random.Random(11)  # noqa: S311 - kill moments, not cryptography
    peak = 0
    left_at_kills = []
    for _ in range(kills):
        deadline = time.monotonic() + rng.uniform(0.4, 1.2)
        while time.monotonic() < deadline:
            peak = max(peak, await _most_running_children(connection))
            await asyncio.sleep(0.05)
        left_at_kills.append(await unfinished(connection))
        victim = rng.choice(workers)
        victim.kill()  # its replacement starts at once; it is ready when it is
        workers.remove(victim)
        workers.append(processes(database_dsn, "worker", **KILL_DRILL_WORKER))
    await asyncio.gather(*(asyncio.to_thread(worker.wait_ready) for worker in workers))

    await wait_until_drained(connection)
    drained = time.monotonic() - started

    statuses = {
        (row["parent"], row["status"]): row["count"]
        for row in await connection.fetch(
            "SELECT parent_execution_id IS NOT NULL AS parent, status, count(*)"
            " FROM workflow_execution GROUP BY 1, 2"
        )
    }
    assert statuses == {(False, "SUCCESS"): parents, (True, "SUCCESS"): parents * items}, statuses
    per_item = await connection.fetchval(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM workflow_execution"
        " WHERE parent_execution_id IS NOT NULL GROUP BY parent_execution_id, item_index) c"
    )
    assert per_item == 1  # each item's child started exactly once
    tasks = await connection.fetchval("SELECT count(DISTINCT title) FROM tasks")
    assert tasks == parents * items
    assert await connection.fetchval("SELECT count(*) FROM tasks") == parents * items
    outputs = await connection.fetch(
        "SELECT result_data FROM step_execution WHERE step_key = 'each' AND status = 'SUCCESS'"
    )
    assert len(outputs) == parents
    for row in outputs:
        result = json.loads(row["result_data"])
        assert result["count"] == items
        assert [item["task"]["title"].split("/")[1] for item in result["results"]] == [
            str(n) for n in range(items)
        ]
    assert peak <= MAX_CONCURRENCY
    assert min(left_at_kills) > 0, f"kills came after the work ({left_at_kills}): enlarge it"
    for worker in workers:
        assert worker.terminate(timeout=15) < 15
    switchyard_check(database_dsn)
    print(  # noqa: T201 - the scenario's figures, for the README at full size
        f"\nfan-out kills: {parents} parents x {items} items, {kills} SIGKILLs, drained in"
        f" {drained:.1f} s (executions unfinished at each kill: {left_at_kills}); most"
        f" running children of one parent seen: {peak}"
    )


async def _most_running_children(connection: asyncpg.Connection) -> int:
    return int(
        await connection.fetchval(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM workflow_execution"
            " WHERE parent_execution_id IS NOT NULL AND NOT held"
            " AND status IN ('PENDING', 'RUNNING', 'WAITING') GROUP BY parent_step_run) c"
        )
    )
