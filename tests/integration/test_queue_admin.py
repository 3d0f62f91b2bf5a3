"""Operator functions: dead jobs listed and re-queued, cancellation, queue depth, CLI text."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from server.queue import admin, client
from server.queue.jobs import (
    DeadJobCursor,
    JobNotFoundError,
    JobState,
    JobStateConflictError,
    NewJob,
)
from tests.support.queue_support import claim


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
    assert not any(d.estimated for d in depth.values())


def readme_keda_query() -> str:
    """The query the README gives KEDA's postgresql scaler."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Autoscaling workers on the queue", 1)[1]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


async def test_queue_backlog_counts_due_jobs_of_every_priority_and_the_oldest_age(
    connection: asyncpg.Connection,
) -> None:
    empty = await client.queue_backlog(connection)
    assert (empty.due_jobs, empty.oldest_due_seconds) == (0, None)
    await client.enqueue_jobs(
        connection,
        [NewJob(kind="a", priority=p) for p in (5, 0, 0, -3)]
        + [NewJob(kind="later", priority=0, delay_seconds=60)],
    )
    await connection.execute(
        "UPDATE job SET run_at = now() - interval '90 seconds' WHERE priority = -3"
    )
    backlog = await client.queue_backlog(connection)
    assert backlog.due_jobs == 4  # the job due in a minute is not counted
    assert await connection.fetchval(readme_keda_query()) == 4
    assert backlog.oldest_due_seconds is not None
    assert 89 < backlog.oldest_due_seconds < 120
