"""Fenced completion, retry, heartbeat, rescue and release of running jobs (the queue's SQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from server.queue import client
from server.queue.jobs import (
    JobState,
    LeaseLostError,
    NewJob,
)
from tests.support.queue_support import claim, expire_leases


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
