"""Enqueue and claim through `server.queue.client`, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from server.queue import client
from server.queue.jobs import (
    NewJob,
)
from server.queue.sql import JOB_CHANNEL
from tests.support.queue_support import claim
from tests.support.waiting import eventually


async def test_claim_returns_the_job_with_a_lease_and_counts_the_attempt(
    connection: asyncpg.Connection,
) -> None:
    job_id = await client.enqueue_job(connection, NewJob(kind="email", payload={"to": "a@b"}))
    [job] = await claim(connection)
    assert (job.id, job.kind, job.payload, job.attempts) == (job_id, "email", {"to": "a@b"}, 1)
    assert job.locked_until > datetime.now(UTC) + timedelta(seconds=25)
    row = await connection.fetchrow("SELECT state, locked_by, lease_token FROM job")
    assert row is not None
    assert (row["state"], row["locked_by"], row["lease_token"]) == (
        "running",
        "w1",
        job.lease_token,
    )
    assert await claim(connection) == []


async def test_claim_takes_higher_priority_first_then_earlier_run_at(
    connection: asyncpg.Connection,
) -> None:
    now = datetime.now(UTC)
    low = await client.enqueue_job(connection, NewJob(kind="k", priority=0, run_at=now))
    high = await client.enqueue_job(connection, NewJob(kind="k", priority=5, run_at=now))
    older = await client.enqueue_job(
        connection, NewJob(kind="k", priority=0, run_at=now - timedelta(seconds=5))
    )
    claimed = [(await claim(connection, limit=1))[0].id for _ in range(3)]
    assert claimed == [high, older, low]


async def test_claim_skips_jobs_that_are_not_due_yet(connection: asyncpg.Connection) -> None:
    await client.enqueue_job(connection, NewJob(kind="later", delay_seconds=60))
    future = datetime.now(UTC) + timedelta(hours=1)
    await client.enqueue_job(connection, NewJob(kind="later", run_at=future))
    assert await claim(connection) == []
    due_in = await client.seconds_until_next_job(connection)
    assert due_in is not None
    assert 50 < due_in <= 60


async def test_seconds_until_next_job_is_none_on_an_empty_queue_and_zero_when_due(
    connection: asyncpg.Connection,
) -> None:
    assert await client.seconds_until_next_job(connection) is None
    await client.enqueue_job(connection, NewJob(kind="now"))
    assert await client.seconds_until_next_job(connection) == 0


async def test_claim_skips_jobs_locked_by_another_worker(database_dsn: str) -> None:
    first, second = await asyncpg.connect(database_dsn), await asyncpg.connect(database_dsn)
    try:
        locked = await client.enqueue_job(first, NewJob(kind="k", priority=9))
        free = await client.enqueue_job(first, NewJob(kind="k"))
        async with first.transaction():
            await first.execute("SELECT 1 FROM job WHERE id = $1 FOR UPDATE", locked)
            claimed = await asyncio.wait_for(claim(second), timeout=5)
        assert [job.id for job in claimed] == [free]
    finally:
        await first.close()
        await second.close()


async def test_a_claim_never_returns_more_than_its_limit(connection: asyncpg.Connection) -> None:
    await client.enqueue_jobs(connection, [NewJob(kind="k") for _ in range(25)])
    assert len(await claim(connection, limit=10)) == 10
    assert len(await claim(connection, limit=10)) == 10
    assert len(await claim(connection, limit=10)) == 5


async def test_enqueue_jobs_inserts_a_batch_and_skips_live_unique_keys(
    connection: asyncpg.Connection,
) -> None:
    assert await client.enqueue_jobs(connection, []) == []
    await client.enqueue_job(connection, NewJob(kind="k", unique_key="taken"))
    ids = await client.enqueue_jobs(
        connection,
        [
            NewJob(kind="a", payload={"n": 1}, priority=3, max_attempts=2),
            NewJob(kind="b", unique_key="taken"),
            NewJob(kind="c", unique_key="fresh"),
            NewJob(kind="d", unique_key="fresh"),
        ],
    )
    assert len(ids) == 2
    rows = await connection.fetch(
        "SELECT kind, payload::text, priority, max_attempts FROM job WHERE id = ANY($1) ORDER BY id",
        ids,
    )
    assert [tuple(r) for r in rows] == [("a", '{"n": 1}', 3, 2), ("c", "{}", 0, 5)]


async def test_a_unique_key_is_free_again_once_its_job_finished(
    connection: asyncpg.Connection,
) -> None:
    assert await client.enqueue_job(connection, NewJob(kind="k", unique_key="u")) is not None
    assert await client.enqueue_job(connection, NewJob(kind="k", unique_key="u")) is None
    [job] = await claim(connection)
    assert await client.enqueue_job(connection, NewJob(kind="k", unique_key="u")) is None
    await client.complete_jobs(connection, [job.lease])
    assert await client.enqueue_job(connection, NewJob(kind="k", unique_key="u")) is not None


async def test_rolled_back_enqueue_leaves_no_job_and_wakes_nobody(database_dsn: str) -> None:
    producer, listener = await asyncpg.connect(database_dsn), await asyncpg.connect(database_dsn)
    woken: list[str] = []
    await listener.add_listener(JOB_CHANNEL, lambda *args: woken.append(args[2]))
    try:
        with pytest.raises(RuntimeError, match="caller failed"):
            await enqueue_then_fail(producer)
        assert await producer.fetchval("SELECT count(*) FROM job") == 0
        async with producer.transaction():
            await client.enqueue_job(producer, NewJob(kind="k"))
            await client.enqueue_job(producer, NewJob(kind="k"))
            await listener.fetchval("SELECT 1")  # a round trip: nothing is delivered before commit
            assert woken == []
        await eventually(lambda: len(woken) == 1, what="notification")
        await listener.fetchval("SELECT 1")
        assert woken == [JOB_CHANNEL]  # one notification per transaction, however many jobs
    finally:
        await producer.close()
        await listener.close()


async def enqueue_then_fail(connection: asyncpg.Connection) -> None:
    async with connection.transaction():
        await client.enqueue_job(connection, NewJob(kind="k"))
        await client.enqueue_jobs(connection, [NewJob(kind="k"), NewJob(kind="k")])
        raise RuntimeError("caller failed")


async def test_concurrent_claimers_never_get_the_same_job(database_dsn: str) -> None:
    connections = [await asyncpg.connect(database_dsn) for _ in range(4)]
    try:
        ids = await client.enqueue_jobs(connections[0], [NewJob(kind="k")] * 300)

        async def drain(connection: asyncpg.Connection, worker: str) -> list[int]:
            taken: list[int] = []
            while batch := await claim(connection, limit=7, worker=worker):
                taken.extend(job.id for job in batch)
            return taken

        claims = await asyncio.gather(*(drain(c, f"w{n}") for n, c in enumerate(connections)))
    finally:
        for connection in connections:
            await connection.close()
    everything = [job_id for taken in claims for job_id in taken]
    assert sorted(everything) == sorted(ids)
