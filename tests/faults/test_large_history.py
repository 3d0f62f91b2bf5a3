"""A large backlog, drained, then read: one worker drains a large backlog about as fast as a
small one, and an executions page costs the same at any depth and with any filter.

Small in CI (1,000 events); `FAULT_SCALE=large` runs 200,000, where the page p99 must stay under
50 ms and the large drain within 20% of the small one's rate. Autovacuum is off for the run, so
the drain and the first deep page meet stale statistics; the other pages follow an ANALYZE. The bytes each execution takes in
the database are printed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from tests.faults.drill import LARGE, Process, sized
from tests.support.credentials import API_TOKEN
from tests.support.waiting import eventually

DOCUMENT = {
    "name": "History",
    "steps": [
        {"key": "check", "kind": "condition", "cfg": {"expression": "trigger.n % 50 != 0"}},
        {"key": "shape", "kind": "action", "action_key": "transform",
         "cfg": {"output": {"n": "{{ trigger.n }}"}}},
        {"key": "fail", "kind": "action", "action_key": "transform",
         "cfg": {"output": "{{ trigger.missing }}"}},
    ],
    "edges": [{"from": "check", "to": "shape", "branch_key": "true"},
              {"from": "check", "to": "fail", "branch_key": "false"}],
    "subscriptions": [{"trigger_key": "history", "filter_conditions": {}}],
}  # fmt: skip
TABLES = ("workflow_execution", "step_execution", "trigger_event", "job", "tasks")


async def send(client: httpx.AsyncClient, first: int, count: int) -> None:
    semaphore = asyncio.Semaphore(32)

    async def one(n: int) -> None:
        async with semaphore:
            body = {"trigger_key": "history", "payload": {"n": n}}
            response = await client.post("/api/v1/events", json=body)
            assert response.status_code == 202, response.text

    await asyncio.gather(*(one(n) for n in range(first, first + count)))


async def drain_rate(
    connection: asyncpg.Connection, start_worker: Callable[[], Process], expected: int
) -> float:
    """Executions per second one worker finishes (first to last finish, start-up excluded)."""
    since = await connection.fetchval("SELECT now()")
    worker = start_worker()
    await asyncio.to_thread(worker.wait_ready)
    row = await eventually(
        lambda: connection.fetchrow(
            "SELECT count(*) AS done, min(finished_at) AS first, max(finished_at) AS last"
            " FROM workflow_execution WHERE finished_at >= $1",
            since,
        ),
        until=lambda row: row is not None and row["done"] >= expected,
        what=f"{expected} executions drained",
        within=7200 if LARGE else 300,
        every=0.5,
    )
    assert row is not None
    worker.terminate(30)
    seconds = (row["last"] - row["first"]).total_seconds()
    return (row["done"] - 1) / max(seconds, 1e-3)  # type: ignore[no-any-return]


async def page_p99(client: httpx.AsyncClient, params: dict[str, str]) -> float:
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        response = await client.get("/api/v1/executions", params={"limit": "50", **params})
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        assert response.json()["items"], params
    return sorted(timings)[-1] * 1000  # 20 samples: the slowest is the p99 (and p95)


async def cursor_at(connection: asyncpg.Connection, depth: int, where: str = "true") -> str:
    row = await connection.fetchrow(
        f"SELECT created_at, id FROM workflow_execution WHERE {where}"  # noqa: S608 - fixed text
        " ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
        depth,
    )
    assert row is not None
    values: list[Any] = [row["created_at"].isoformat(), str(row["id"])]
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


async def test_a_large_backlog_drains_at_full_rate_and_pages_cost_the_same_at_any_depth(
    switchyard_check: Callable[[str], str],
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
) -> None:
    small, large = sized(100, 10_000), sized(1_000, 200_000)
    api = processes(database_dsn, "api", "api")
    await asyncio.to_thread(api.wait_ready)

    def start_worker() -> Process:
        return processes(database_dsn, "worker", WORKER_CONCURRENCY="32", DB_POOL_MAX_SIZE="40")

    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=60
    ) as client:
        await client.post(
            "/api/v1/registry/triggers", json={"trigger_key": "history", "type": "event"}
        )
        imported = await client.post("/api/v1/workflows/import", params={"publish": "true"},
                                     json=DOCUMENT)  # fmt: skip
        workflow_id = imported.json()["id"]
        for table in TABLES:  # statistics stay stale until the ANALYZE below
            await connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        await send(client, 0, small)
        small_rate = await drain_rate(connection, start_worker, small)
        await send(client, small, large)
        large_rate = await drain_rate(connection, start_worker, large)
        total = small + large
        stale = await page_p99(client, {"cursor": await cursor_at(connection, total * 95 // 100)})
        await connection.execute("ANALYZE")
        pages = {
            "deep_stale_statistics": stale,
            "first": await page_p99(client, {}),
            "middle": await page_p99(client, {"cursor": await cursor_at(connection, total // 2)}),
            "deep": await page_p99(client, {"cursor": await cursor_at(connection, total * 95 // 100)}),
            "failed": await page_p99(client, {"status": "FAILED"}),
            "failed_deep": await page_p99(client, {"status": "FAILED", "cursor": await cursor_at(
                connection, total // 50 * 9 // 10, "status = 'FAILED'")}),
            "workflow_deep": await page_p99(client, {"workflow_id": workflow_id, "cursor":
                                                     await cursor_at(connection, total // 2)}),
        }  # fmt: skip
    size = await connection.fetchval(
        "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest($1::text[]) t", list(TABLES)
    )
    print(  # noqa: T201 - the scenario's figures, for the README at full size
        f"\nlarge history: {total} executions; drain {small_rate:.0f}/s from {small},"
        f" {large_rate:.0f}/s from {large} ({large_rate / small_rate:.2f}x);"
        f" page p99 ms {', '.join(f'{k} {v:.1f}' for k, v in pages.items())};"
        f" {size / total:.0f} bytes per execution"
    )
    switchyard_check(database_dsn)
    if LARGE:
        assert large_rate >= 0.8 * small_rate
        assert max(pages.values()) < 50, pages
    else:  # small and noisy: the shape, not the figures
        assert large_rate >= 0.5 * small_rate
        assert pages["deep"] <= 3 * pages["first"] + 20, pages
        assert pages["deep_stale_statistics"] <= 3 * pages["first"] + 20, pages
        assert pages["failed_deep"] <= 3 * pages["first"] + 20, pages
