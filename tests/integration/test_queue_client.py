"""The queue's SQL through `server.queue.client`, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from server.queue import admin, client
from server.queue.jobs import (
    ClaimedJob,
    DeadJobCursor,
    JobNotFoundError,
    JobState,
    JobStateConflictError,
    LeaseLostError,
    NewJob,
)
from server.queue.sql import JOB_CHANNEL
from tests.queue_support import eventually

LEASE_SECONDS = 30.0


@pytest.fixture
async def connection(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    opened = await asyncpg.connect(database_dsn)
    yield opened
    await opened.close()


async def claim(
    connection: asyncpg.Connection, limit: int = 10, worker: str = "w1"
) -> list[ClaimedJob]:
    return await client.claim_jobs(
        connection, worker_id=worker, limit=limit, lease_seconds=LEASE_SECONDS
    )


async def expire_leases(connection: asyncpg.Connection) -> None:
    """Move every lease into the past: the test's stand-in for waiting out a lease."""
    await connection.execute(
        "UPDATE job SET locked_until = now() - interval '1 second' WHERE state = 'running'"
    )


async def test_claim_returns_the_job_with_a_lease_and_counts_the_attempt(
    connection: asyncpg.Connection,
) -> None:
    job_id = await client.enqueue_job(connection, NewJob(kind="email", payload={"to": "a@b"}))
    [job] = await claim(connection)
    assert (job.id, job.kind, job.payload, job.attempts) == (job_id, "email", {"to": "a@b"}, 1)
    assert job.locked_until > datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS - 5)
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


async def test_complete_deletes_the_job_and_a_stale_completion_is_refused(
    connection: asyncpg.Connection,
) -> None:
    await client.enqueue_job(connection, NewJob(kind="k"))
    [stale] = await claim(connection, worker="paused")
    await expire_leases(connection)
    [rescued] = await client.rescue_expired_jobs(connection, limit=10)
    assert (rescued.state, rescued.attempts) == (JobState.QUEUED, 1)
    [current] = await claim(connection, worker="alive")
    assert current.attempts == 2
    before = await connection.fetchrow("SELECT * FROM job")
    with pytest.raises(LeaseLostError, match=f"job {stale.id} lease lost"):
        await client.complete_job(connection, stale.lease)
    with pytest.raises(LeaseLostError):
        await client.retry_job(connection, stale.lease, delay_seconds=0, error="stale")
    with pytest.raises(LeaseLostError):
        await client.mark_job_dead(connection, stale.lease, error="stale")
    assert await client.complete_jobs(connection, [stale.lease]) == frozenset()
    assert await client.extend_leases(connection, [stale.lease], lease_seconds=60) == frozenset()
    assert await client.release_jobs(connection, [stale.lease], reason="stale") == []
    assert await connection.fetchrow("SELECT * FROM job") == before
    async with connection.transaction():
        await client.complete_job(connection, current.lease)
    assert await connection.fetchval("SELECT count(*) FROM job") == 0


async def test_complete_and_claim_reports_completed_ids_and_claims_in_one_cycle(
    connection: asyncpg.Connection,
) -> None:
    await client.enqueue_jobs(connection, [NewJob(kind="k") for _ in range(3)])
    first = await claim(connection, limit=2)
    cycle = await client.complete_and_claim_jobs(
        connection, [job.lease for job in first], worker_id="w1", limit=5, lease_seconds=30
    )
    assert cycle.completed == {job.id for job in first}
    assert len(cycle.claimed) == 1
    assert await connection.fetchval("SELECT count(*) FROM job") == 1


async def test_retry_queues_the_job_later_with_its_error(connection: asyncpg.Connection) -> None:
    await client.enqueue_job(connection, NewJob(kind="k"))
    [job] = await claim(connection)
    await client.retry_job(connection, job.lease, delay_seconds=30, error="boom")
    row = await connection.fetchrow(
        "SELECT state, attempts, last_error, lease_token, locked_by,"
        " extract(epoch FROM run_at - updated_at) AS delay FROM job"
    )
    assert row is not None
    assert (row["state"], row["attempts"], row["last_error"]) == ("queued", 1, "boom")
    assert (row["lease_token"], row["locked_by"]) == (None, None)
    assert 29.9 < row["delay"] <= 30
    assert await claim(connection) == []


async def test_heartbeat_extends_current_leases_only(connection: asyncpg.Connection) -> None:
    await client.enqueue_jobs(connection, [NewJob(kind="k"), NewJob(kind="k")])
    first, second = await claim(connection)
    await connection.execute(
        "UPDATE job SET lease_token = gen_random_uuid() WHERE id = $1", second.id
    )
    kept = await client.extend_leases(connection, [first.lease, second.lease], lease_seconds=600)
    assert kept == {first.id}
    until = await connection.fetchval("SELECT locked_until FROM job WHERE id = $1", first.id)
    assert until > datetime.now(UTC) + timedelta(seconds=500)


async def test_rescue_requeues_expired_jobs_and_buries_those_out_of_attempts(
    connection: asyncpg.Connection,
) -> None:
    again = await client.enqueue_job(connection, NewJob(kind="k", max_attempts=2))
    last = await client.enqueue_job(connection, NewJob(kind="k", max_attempts=1))
    alive = await client.enqueue_job(connection, NewJob(kind="k"))
    await claim(connection, worker="killed")
    await connection.execute(
        "UPDATE job SET locked_until = now() - interval '1 second' WHERE id <> $1", alive
    )
    rescued = await client.rescue_expired_jobs(connection, limit=10)
    assert {(job.id, job.state) for job in rescued} == {
        (again, JobState.QUEUED),
        (last, JobState.DEAD),
    }
    error = await connection.fetchval("SELECT last_error FROM job WHERE id = $1", last)
    assert error == "lease expired: worker killed stopped heartbeating during attempt 1"
    assert await connection.fetchval("SELECT state FROM job WHERE id = $1", alive) == "running"


async def test_only_one_worker_rescues_at_a_time(database_dsn: str) -> None:
    sweeper, other = await asyncpg.connect(database_dsn), await asyncpg.connect(database_dsn)
    try:
        await client.enqueue_job(sweeper, NewJob(kind="k"))
        await claim(sweeper)
        await expire_leases(sweeper)
        async with sweeper.transaction():
            await sweeper.fetchval("SELECT pg_advisory_xact_lock($1)", 0x7377726573637565)
            assert await client.rescue_expired_jobs(other, limit=10) == []
        assert len(await client.rescue_expired_jobs(other, limit=10)) == 1
    finally:
        await sweeper.close()
        await other.close()


async def test_release_requeues_with_the_attempt_counted(connection: asyncpg.Connection) -> None:
    await client.enqueue_job(connection, NewJob(kind="k"))
    await client.enqueue_job(connection, NewJob(kind="k", max_attempts=1))
    held = await claim(connection)
    released = await client.release_jobs(connection, [j.lease for j in held], reason="shutdown")
    assert sorted((job.state, job.attempts) for job in released) == [
        (JobState.DEAD, 1),
        (JobState.QUEUED, 1),
    ]
    [again] = await claim(connection)
    assert again.attempts == 2


async def test_dead_jobs_are_listed_newest_first_and_can_be_requeued(
    connection: asyncpg.Connection,
) -> None:
    ids = await client.enqueue_jobs(connection, [NewJob(kind=f"k{n}") for n in range(3)])
    for job in await claim(connection):
        await client.mark_job_dead(connection, job.lease, error=f"failed {job.kind}")
        await connection.execute(
            "UPDATE job SET updated_at = now() + make_interval(secs => $2) WHERE id = $1",
            job.id,
            ids.index(job.id),
        )
    first_page = await admin.list_dead_jobs(connection, limit=2)
    assert [job.id for job in first_page] == [ids[2], ids[1]]
    last = first_page[-1]
    cursor = DeadJobCursor(updated_at=last.updated_at, id=last.id)
    assert [job.id for job in await admin.list_dead_jobs(connection, limit=2, after=cursor)] == [
        ids[0]
    ]
    requeued = await admin.requeue_dead_job(connection, ids[0], extra_attempts=3)
    assert (requeued.state, requeued.attempts, requeued.max_attempts) == (JobState.QUEUED, 1, 4)
    assert requeued.last_error == "failed k0"
    [job] = await claim(connection)
    assert (job.id, job.attempts) == (ids[0], 2)


async def test_requeue_refuses_unknown_and_live_jobs(connection: asyncpg.Connection) -> None:
    with pytest.raises(JobNotFoundError, match="job 999 not found"):
        await admin.requeue_dead_job(connection, 999)
    queued = await client.enqueue_job(connection, NewJob(kind="k", unique_key="u"))
    assert queued is not None
    with pytest.raises(JobStateConflictError, match="is queued, not dead"):
        await admin.requeue_dead_job(connection, queued)
    [job] = await claim(connection)
    await client.mark_job_dead(connection, job.lease, error="x")
    await client.enqueue_job(connection, NewJob(kind="k", unique_key="u"))
    with pytest.raises(JobStateConflictError, match="live job already has its unique key"):
        await admin.requeue_dead_job(connection, queued)


async def test_cli_commands_print_dead_jobs_and_requeue_them(
    connection: asyncpg.Connection,
) -> None:
    assert await admin.dead_jobs_command(connection) == "no dead jobs"
    await client.enqueue_job(connection, NewJob(kind="email"))
    [job] = await claim(connection)
    await client.mark_job_dead(connection, job.lease, error="SMTP refused\ntraceback...")
    table = await admin.dead_jobs_command(connection)
    assert "email" in table
    assert "SMTP refused" in table
    assert "traceback" not in table
    message = await admin.requeue_command(connection, job.id)
    assert (
        message == f"job {job.id} (email) re-queued: it runs again now, with up to 5 more attempts"
    )


async def test_cancel_withdraws_only_queued_jobs(connection: asyncpg.Connection) -> None:
    queued = await client.enqueue_job(connection, NewJob(kind="k", delay_seconds=60))
    running = await client.enqueue_job(connection, NewJob(kind="k"))
    assert running is not None
    await claim(connection)
    assert queued is not None
    assert await client.cancel_job(connection, queued) is True
    assert await client.cancel_job(connection, running) is False
    assert await client.cancel_job(connection, 12345) is False
    job = await admin.get_job(connection, queued)
    assert job is not None
    assert job.state is JobState.CANCELLED


async def test_queue_depth_counts_jobs_by_kind_and_state(connection: asyncpg.Connection) -> None:
    await client.enqueue_jobs(
        connection, [NewJob(kind="a"), NewJob(kind="a"), NewJob(kind="b", delay_seconds=60)]
    )
    await claim(connection, limit=1)
    depth = {(d.kind, d.state): d for d in await client.queue_depth(connection)}
    assert {key: d.count for key, d in depth.items()} == {
        ("a", JobState.QUEUED): 1,
        ("a", JobState.RUNNING): 1,
        ("b", JobState.QUEUED): 1,
    }
    assert depth["a", JobState.QUEUED].oldest_due_seconds is not None
    assert depth["b", JobState.QUEUED].oldest_due_seconds is None
