"""The queue's asyncpg calls: run the statements of `server.queue.sql`, return structs.

Every function takes the connection as its first argument and never acquires one, so it joins
whatever transaction the caller has open: an enqueue inside `async with engine.transaction() as
tx:` (pass `tx.connection`) commits or rolls back with the caller's own writes, and its
notification is delivered only if it commits. Functions that change a running job take its
`Lease` and are fenced: `LeaseLostError` (single job) or a missing id in the result (batches)
means the lease was no longer ours and nothing changed. Queries rely on the pool's
`command_timeout` for their network timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from server.queue import sql
from server.queue.jobs import (
    ClaimCycle,
    ClaimedJob,
    JobState,
    JobWait,
    Lease,
    LeaseLostError,
    NewJob,
    Payload,
    QueueDepth,
    ReleasedJob,
)

# A raw connection or one borrowed from a pool (Piccolo's `tx.connection` is the latter).
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
# last_error is for people; a traceback-sized message is cut here.
MAX_ERROR_CHARS: Final = 4000
# Columns of a claimed row of `sql.CLAIM_JOBS_WITH_WAITS` (the plain claim has 8).
CLAIM_WAIT_COLUMNS: Final = 10

_encode_json = msgspec.json.Encoder().encode
_decode_payload = msgspec.json.Decoder(Payload).decode


def payload_text(payload: Payload) -> str:
    """The JSON text a payload is stored as (sent as text and cast to jsonb in SQL)."""
    return _encode_json(payload).decode()


async def enqueue_job(connection: Connection, job: NewJob) -> int | None:
    """Insert `job` in the caller's transaction and wake workers when it commits.

    Returns:
        The new job's id, or None when a live job already holds `job.unique_key`.
    """
    job_id: int | None = await connection.fetchval(
        sql.ENQUEUE_JOB,
        job.kind,
        payload_text(job.payload),
        job.priority,
        job.run_at,
        job.delay_seconds,
        job.max_attempts,
        job.unique_key,
    )
    return job_id


async def enqueue_jobs(connection: Connection, jobs: Sequence[NewJob]) -> list[int]:
    """Insert many jobs with one statement in the caller's transaction; one wake-up.

    Returns:
        The ids of the inserted jobs; jobs whose unique_key is live (also earlier in the same
        batch) are skipped, so the list can be shorter than `jobs`.
    """
    if not jobs:
        return []
    rows = await sql.ENQUEUE_JOBS.fetch(connection, **job_arrays(jobs))
    return [row[0] for row in rows]


def job_arrays(jobs: Sequence[NewJob]) -> dict[str, list[Any]]:
    """The named parallel arrays `sql.enqueue_jobs_ctes` takes."""
    return {
        "job_kinds": [job.kind for job in jobs],
        "job_payloads": [payload_text(job.payload) for job in jobs],
        "job_priorities": [job.priority for job in jobs],
        "job_run_ats": [job.run_at for job in jobs],
        "job_delays": [job.delay_seconds for job in jobs],
        "job_max_attempts": [job.max_attempts for job in jobs],
        "job_unique_keys": [job.unique_key for job in jobs],
    }


def settle_job_args(lease: Lease, continuation: NewJob | None) -> dict[str, Any]:
    """The named parameters of CONTINUE_JOB and `sql.settle_job_ctes`: the lease, and the work
    the job is handed on to (None: the job is completed)."""
    return {
        "job_id": lease.job_id,
        "lease_token": lease.lease_token,
        "next_kind": None if continuation is None else continuation.kind,
        "next_payload": None if continuation is None else payload_text(continuation.payload),
        "next_max_attempts": None if continuation is None else continuation.max_attempts,
        "next_unique_key": None if continuation is None else continuation.unique_key,
    }


async def claim_jobs(
    connection: Connection, *, worker_id: str, limit: int, lease_seconds: float
) -> list[ClaimedJob]:
    """Claim up to `limit` due jobs, most urgent first, each with a lease of `lease_seconds`.

    Never waits for rows other workers are claiming (SKIP LOCKED) and never hands one job to
    two workers. The attempt is counted now.
    """
    cycle = await complete_and_claim_jobs(
        connection, (), worker_id=worker_id, limit=limit, lease_seconds=lease_seconds
    )
    return cycle.claimed


async def complete_and_claim_jobs(
    connection: Connection,
    finished: Sequence[Lease],
    *,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    with_waits: bool = False,
) -> ClaimCycle:
    """Complete (delete) the `finished` jobs still leased to us and claim up to `limit` more,
    in one statement and one commit: a worker's whole cycle in one round trip.

    `ClaimCycle.completed` holds the ids that were completed; a lease of `finished` missing
    from it was lost, and that run changed nothing. `with_waits`: each claimed job also tells
    how long it waited (`ClaimedJob.waited`; for tracing, which alone pays for it).
    """
    rows = await connection.fetch(
        sql.CLAIM_JOBS_WITH_WAITS if with_waits else sql.CLAIM_JOBS,
        limit,
        worker_id,
        lease_seconds,
        [lease.job_id for lease in finished],
        [lease.lease_token for lease in finished],
    )
    claimed = [_claimed_job(row) for row in rows if row[1] is not None]
    completed = frozenset(row[0] for row in rows if row[1] is None)
    return ClaimCycle(claimed=claimed, completed=completed)


async def complete_jobs(connection: Connection, finished: Sequence[Lease]) -> frozenset[int]:
    """Complete a batch of jobs; returns the ids completed (the others' leases were lost)."""
    cycle = await complete_and_claim_jobs(
        connection, finished, worker_id="", limit=0, lease_seconds=0.0
    )
    return cycle.completed


async def complete_job(connection: Connection, lease: Lease) -> None:
    """Complete one job inside the caller's transaction, together with the caller's writes.

    The row stays locked until that transaction ends, so no rescuer can re-queue the job
    between this call and the commit.

    Raises:
        LeaseLostError: the lease is no longer ours; roll the transaction back.
    """
    if await connection.fetchval(sql.COMPLETE_JOB, lease.job_id, lease.lease_token) is None:
        raise LeaseLostError(lease.job_id)


async def continue_job(connection: Connection, lease: Lease, job: NewJob) -> None:
    """Hand a running job on to the work `job` describes, in the caller's transaction, instead
    of completing it: same row and lease, `job`'s kind, payload, unique key and max attempts,
    and attempt 1. Only `kind`, `payload`, `max_attempts` and `unique_key` of `job` are used.

    Raises:
        LeaseLostError: the lease is no longer ours; roll the transaction back.
    """
    if await sql.CONTINUE_JOB.fetchval(connection, **settle_job_args(lease, job)) is None:
        raise LeaseLostError(lease.job_id)


async def retry_job(
    connection: Connection, lease: Lease, *, delay_seconds: float, error: str
) -> JobState:
    """Queue a failed attempt again `delay_seconds` from now, recording `error`.

    Returns:
        `QUEUED`, or `DEAD` when the job had used its last attempt (never run past
        `max_attempts`).

    Raises:
        LeaseLostError: the lease is no longer ours; nothing changed.
    """
    state = await connection.fetchval(
        sql.RETRY_JOB, lease.job_id, lease.lease_token, delay_seconds, _truncate(error)
    )
    if state is None:
        raise LeaseLostError(lease.job_id)
    return JobState(state)


async def mark_job_dead(connection: Connection, lease: Lease, *, error: str) -> None:
    """Give up on a running job: it becomes dead, kept with `error` for an operator.

    Raises:
        LeaseLostError: the lease is no longer ours; nothing changed.
    """
    job_id = await connection.fetchval(
        sql.MARK_JOB_DEAD, lease.job_id, lease.lease_token, _truncate(error)
    )
    if job_id is None:
        raise LeaseLostError(lease.job_id)


async def extend_leases(
    connection: Connection, leases: Sequence[Lease], *, lease_seconds: float
) -> frozenset[int]:
    """Heartbeat: extend to now + `lease_seconds` every lease still ours; returns their ids."""
    if not leases:
        return frozenset()
    rows = await connection.fetch(
        sql.EXTEND_LEASES,
        [lease.job_id for lease in leases],
        [lease.lease_token for lease in leases],
        lease_seconds,
    )
    return frozenset(row[0] for row in rows)


async def release_jobs(
    connection: Connection, leases: Sequence[Lease], *, reason: str
) -> list[ReleasedJob]:
    """Hand back jobs we hold (shutdown): queued again, attempt counted, or dead if that was
    their last attempt. Leases no longer ours are skipped."""
    if not leases:
        return []
    rows = await connection.fetch(
        sql.RELEASE_JOBS,
        [lease.job_id for lease in leases],
        [lease.lease_token for lease in leases],
        _truncate(reason),
    )
    return [_released_job(row) for row in rows]


async def rescue_expired_jobs(connection: Connection, *, limit: int) -> list[ReleasedJob]:
    """Return up to `limit` jobs whose lease expired to the queue (or to dead, when that was
    their last attempt). Only one worker sweeps at a time; the others get an empty list.

    Opens its own (sub)transaction: the sweep lock lasts until it ends.
    """
    async with connection.transaction():
        if not await connection.fetchval(sql.TRY_RESCUE_LOCK, sql.RESCUE_LOCK_ID):
            return []
        rows = await connection.fetch(sql.RESCUE_EXPIRED_JOBS, limit)
    return [_released_job(row) for row in rows]


async def seconds_until_next_job(connection: Connection) -> float | None:
    """Seconds until the earliest queued job is due (0 if one is due now); None if none."""
    seconds: float | None = await connection.fetchval(sql.SECONDS_UNTIL_NEXT_JOB)
    return None if seconds is None else max(seconds, 0.0)


async def queue_depth(connection: Connection) -> list[QueueDepth]:
    """Jobs per kind and state, with the age of the oldest due queued job (for metrics)."""
    rows = await connection.fetch(sql.QUEUE_DEPTH)
    return [
        QueueDepth(kind=r[0], state=JobState(r[1]), count=r[2], oldest_due_seconds=r[3])
        for r in rows
    ]


async def cancel_job(connection: Connection, job_id: int) -> bool:
    """Withdraw a queued job; False if it is not queued (running, finished or unknown)."""
    return await connection.fetchval(sql.CANCEL_JOB, job_id) is not None


async def delete_queued_jobs_by_key_prefix(connection: Connection, prefix: str) -> int:
    """Withdraw the queued jobs whose unique_key starts with `prefix`; returns how many."""
    status = await connection.execute(sql.DELETE_QUEUED_JOBS_BY_KEY_PREFIX, prefix)
    return int(status.split()[-1])


async def delete_queued_job_by_key(connection: Connection, unique_key: str) -> bool:
    """Withdraw the queued job holding `unique_key`; True if there was one."""
    status = await connection.execute(sql.DELETE_QUEUED_JOB_BY_KEY, unique_key)
    return status.split()[-1] != "0"


def decode_payload(text: str) -> Payload:
    """A stored payload (JSON text) as a dict."""
    return _decode_payload(text)


def _claimed_job(row: asyncpg.Record) -> ClaimedJob:
    return ClaimedJob(
        id=row[0],
        kind=row[1],
        payload=_decode_payload(row[2]),
        priority=row[3],
        attempts=row[4],
        max_attempts=row[5],
        lease_token=row[6],
        locked_until=row[7],
        waited=None if len(row) < CLAIM_WAIT_COLUMNS else JobWait(created=row[8], due=row[9]),
    )


def _released_job(row: asyncpg.Record) -> ReleasedJob:
    return ReleasedJob(id=row[0], kind=row[1], state=JobState(row[2]), attempts=row[3])


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
