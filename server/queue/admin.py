"""Operator actions on the queue: inspect jobs, list dead ones, re-queue them.

The query functions take a connection like the rest of the queue (so they can join a
transaction); the `*_command` functions are what `switchyard jobs dead` and
`switchyard jobs requeue ID` run: they return the text to print, and raise `JobNotFoundError` or
`JobStateConflictError` with a message a person can act on.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from server.queue import sql
from server.queue.client import Connection, decode_payload
from server.queue.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    DeadJobCursor,
    Job,
    JobNotFoundError,
    JobState,
    JobStateConflictError,
)

DEFAULT_DEAD_JOBS_LIMIT: Final = 50
# How much of last_error the CLI table shows; the API returns it whole.
ERROR_PREVIEW_CHARS: Final = 80


async def get_job(connection: Connection, job_id: int) -> Job | None:
    row = await connection.fetchrow(sql.GET_JOB, job_id)
    return None if row is None else _job(row)


async def list_dead_jobs(
    connection: Connection, *, limit: int, after: DeadJobCursor | None = None
) -> list[Job]:
    """Dead jobs, most recently dead first; pass the last one's cursor for the next page."""
    rows = await connection.fetch(
        sql.LIST_DEAD_JOBS,
        limit,
        after.updated_at if after else None,
        after.id if after else None,
    )
    return [_job(row) for row in rows]


async def requeue_dead_job(
    connection: Connection, job_id: int, *, extra_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> Job:
    """Queue dead job `job_id` again now, with `extra_attempts` more attempts.

    Raises:
        JobNotFoundError: no such job.
        JobStateConflictError: the job is not dead, or a live job holds its unique key.
    """
    try:
        row = await connection.fetchrow(sql.REQUEUE_DEAD_JOB, job_id, extra_attempts)
    except asyncpg.UniqueViolationError:
        raise JobStateConflictError(
            f"job {job_id} cannot be re-queued: a live job already has its unique key; "
            "wait for that job to finish"
        ) from None
    if row is not None:
        return _job(row)
    job = await get_job(connection, job_id)
    if job is None:
        raise JobNotFoundError(f"job {job_id} not found")
    raise JobStateConflictError(
        f"job {job_id} is {job.state}, not dead; only dead jobs can be re-queued"
    )


async def dead_jobs_command(connection: Connection, *, limit: int = DEFAULT_DEAD_JOBS_LIMIT) -> str:
    """`switchyard jobs dead`: a table of the most recently dead jobs, or a line saying none."""
    jobs = await list_dead_jobs(connection, limit=limit)
    return format_dead_jobs(jobs)


async def requeue_command(connection: Connection, job_id: int) -> str:
    """`switchyard jobs requeue ID`: re-queue a dead job and say what happens next."""
    job = await requeue_dead_job(connection, job_id)
    return (
        f"job {job.id} ({job.kind}) re-queued: it runs again now, with up to "
        f"{job.max_attempts - job.attempts} more attempts"
    )


def format_dead_jobs(jobs: list[Job]) -> str:
    """One line per dead job: id, kind, attempts, when it died, the start of its error."""
    if not jobs:
        return "no dead jobs"
    lines = [f"{'ID':>10}  {'KIND':<24} {'ATTEMPTS':>8}  {'DEAD SINCE':<25} LAST ERROR"]
    for job in jobs:
        error = (job.last_error or "").splitlines()[0:1]
        preview = error[0][:ERROR_PREVIEW_CHARS] if error else ""
        lines.append(
            f"{job.id:>10}  {job.kind:<24} {job.attempts:>8}  "
            f"{job.updated_at.isoformat(timespec='seconds'):<25} {preview}"
        )
    lines.append(f"re-queue one with: switchyard jobs requeue ID ({len(jobs)} shown)")
    return "\n".join(lines)


def _job(row: asyncpg.Record) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        payload=decode_payload(row["payload"]),
        state=JobState(row["state"]),
        priority=row["priority"],
        run_at=row["run_at"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        locked_by=row["locked_by"],
        locked_until=row["locked_until"],
        last_error=row["last_error"],
        unique_key=row["unique_key"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
