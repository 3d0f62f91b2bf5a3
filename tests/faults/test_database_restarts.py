"""PostgreSQL restarted, crashed and stopped for seconds while events arrive and a worker
drains them: every role recovers without a restart, the API answers 503 with Retry-After while
the database is away, every accepted event runs to the end, nothing stays stuck, and SIGTERM
afterwards exits within the grace period."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.faults.cluster import OwnCluster
from tests.faults.drill import Process, sized
from tests.support.credentials import API_TOKEN
from tests.support.waiting import eventually

EVENTS_PER_SECOND = 20
DRAIN_TIMEOUT_SECONDS = 300.0
# The drill's pace, not a wait for anything: events keep arriving for this long between
# disruptions, and while the database is away.
PHASE_SECONDS = 2.0
DOCUMENT = {
    "name": "Outage drill",
    "steps": [
        {"key": "check", "kind": "condition", "cfg": {"expression": "trigger.n >= 0"}},
        {"key": "task", "kind": "action", "action_key": "task_management",
         "cfg": {"operation": "create", "title": "Outage {{ trigger.n }}"}},
        {"key": "shape", "kind": "action", "action_key": "transform",
         "cfg": {"output": {"n": "{{ trigger.n }}"}}},
    ],
    "edges": [{"from": "check", "to": "task", "branch_key": "true"},
              {"from": "task", "to": "shape"}],
    "subscriptions": [{"trigger_key": "outage", "filter_conditions": {}}],
}  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[OwnCluster]:
    own = OwnCluster(tmp_path / "cluster")
    try:
        yield own
    finally:
        own.close()


class Sender:
    """Sends numbered events until stopped; a refused or unanswered one is sent again with the
    same idempotency key, as a careful client would. Counts what the API answered while the
    database was away."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.accepted: set[int] = set()
        self.unavailable: list[httpx.Response] = []
        self.other: list[str] = []
        self.stopping = False

    async def run(self) -> None:
        n = 0
        while not self.stopping:
            await self._send_until_accepted(n)
            n += 1
            await asyncio.sleep(1 / EVENTS_PER_SECOND)

    async def _send_until_accepted(self, n: int) -> None:
        body = {"trigger_key": "outage", "payload": {"n": n}, "idempotency_key": f"e{n}"}
        while True:
            try:
                response = await self.client.post("/api/v1/events", json=body)
            except httpx.TransportError as error:
                self.other.append(repr(error))
            else:
                if response.status_code in {200, 202}:
                    self.accepted.add(n)
                    return
                if response.status_code == 503:
                    self.unavailable.append(response)
                else:
                    self.other.append(f"{response.status_code} {response.text[:200]}")
            await asyncio.sleep(0.2)


@pytest.fixture
async def drill_client(
    cluster: OwnCluster, processes: Callable[..., Process]
) -> AsyncIterator[tuple[httpx.AsyncClient, Process, str]]:
    dsn = await cluster.create_database("drill")
    server = processes(dsn, "api,worker", "server", JOB_LEASE_SECONDS="3",
                       JOB_POLL_INTERVAL_SECONDS="0.5")  # fmt: skip
    await asyncio.to_thread(server.wait_ready)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10
    ) as client:
        await client.post(
            "/api/v1/registry/triggers", json={"trigger_key": "outage", "type": "event"}
        )
        imported = await client.post("/api/v1/workflows/import", params={"publish": "true"},
                                     json=DOCUMENT)  # fmt: skip
        assert imported.status_code == 201, imported.text
        yield client, server, dsn


async def _while_away(client: httpx.AsyncClient) -> list[httpx.Response]:
    """What the API answers on a read, a list and a webhook while the database is away."""
    return [
        await client.get("/api/v1/executions"),
        await client.get("/api/v1/workflows"),
        await client.post("/hooks/outage", json={}),
    ]


async def test_the_database_restarting_and_going_away_loses_and_strands_nothing(
    switchyard_check: Callable[[str], str],
    cluster: OwnCluster,
    drill_client: tuple[httpx.AsyncClient, Process, str],
) -> None:
    client, server, dsn = drill_client
    sender = Sender(client)
    sending = asyncio.create_task(sender.run())
    outages = sized(2, 8)
    away_answers: list[httpx.Response] = []
    try:
        await asyncio.sleep(PHASE_SECONDS)
        await asyncio.to_thread(cluster.restart, "fast")
        await asyncio.sleep(PHASE_SECONDS)
        await asyncio.to_thread(cluster.restart, "immediate")
        for _ in range(outages):
            await asyncio.sleep(PHASE_SECONDS)
            await asyncio.to_thread(cluster.stop, "fast")
            away_answers += await _while_away(client)
            await asyncio.sleep(PHASE_SECONDS)
            await asyncio.to_thread(cluster.start)
        await asyncio.sleep(PHASE_SECONDS)
    finally:
        sender.stopping = True
        await sending

    assert away_answers
    for answer in away_answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
    assert [o for o in sender.other if o.startswith("5") and not o.startswith("503")] == []

    connection = await asyncpg.connect(dsn)
    try:

        async def statuses_by_event() -> dict[int, str | None]:
            rows = await connection.fetch(
                "SELECT (e.payload->>'n')::int AS n, x.status FROM trigger_event e"
                " LEFT JOIN workflow_execution x ON x.trigger_event_id = e.id"
            )
            return {row["n"]: row["status"] for row in rows}

        statuses = await eventually(
            statuses_by_event,
            until=lambda statuses: all(
                status in {"SUCCESS", "FAILED", "CANCELLED"} for status in statuses.values()
            ),
            what="every recorded event's execution finished",
            within=DRAIN_TIMEOUT_SECONDS,
            every=0.5,
        )
        tasks = await connection.fetchval("SELECT count(*) FROM tasks")
    finally:
        await connection.close()
    assert set(statuses) >= sender.accepted  # every accepted event was recorded
    assert set(statuses.values()) == {"SUCCESS"}, statuses
    assert tasks == len(statuses)
    exit_seconds = server.terminate(timeout=15)
    switchyard_check(dsn)
    print(  # noqa: T201 - the scenario's figures
        f"\ndatabase restarts: {len(sender.accepted)} events, 2 restarts + {outages} outages;"
        f" {len(sender.unavailable)} answers 503 while away; SIGTERM exit in {exit_seconds:.1f} s"
    )
