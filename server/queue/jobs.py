"""The queue's vocabulary: job states, the structs that cross its boundary, and its errors.

A job is `queued` until a worker claims it (`running`, holding a lease); a successful run
deletes the row, so the hot table holds only live work and the jobs an operator must look at.
A failed attempt goes back to `queued` with a later `run_at` (backoff) until its attempts are
exhausted; then, or when a handler raises `PermanentError`, it becomes `dead`: kept, listed
and re-queueable, never dropped. `cancelled` jobs were withdrawn before they ran. `succeeded`
and `failed` name outcomes (`succeeded` is what a completion reports; a failed attempt that
will be retried is re-queued, one that will not is dead); they exist in the table's CHECK for
history rows and are never stored by this queue. Handlers signal failures with
`RetryableError` (optionally with the delay they want) or `PermanentError`; actions import them
from here, since actions may use adapters but never the worker role.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final
from uuid import UUID

import msgspec
from msgspec import Meta

from server.errors import AppError, ConflictError, NotFoundError

# The table's default; a job that fails this many times is dead.
DEFAULT_MAX_ATTEMPTS: Final = 5
# PostgreSQL `smallint`: the range of job.priority (higher runs first).
MIN_PRIORITY: Final = -32768
MAX_PRIORITY: Final = 32767

Priority = Annotated[int, Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
Attempts = Annotated[int, Meta(ge=1)]
Payload = dict[str, Any]


# Histogram buckets of job and step durations: from a no-op (sub-millisecond) to the default
# job timeout (300 s).
DURATION_BUCKETS_SECONDS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip


class JobState(StrEnum):
    """The stored `job.state` values (the table's CHECK constraint)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


class NewJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job to enqueue. `run_at` (absolute) and `delay_seconds` (relative) combine.

    `run_at=None` means the database's `now()`, so delays are measured on the database clock
    that claims use, never on a replica's skewed one. With a `unique_key`, at most one live
    (queued or running) job carries it; a second enqueue of the key is skipped.
    """

    kind: Annotated[str, Meta(min_length=1, max_length=100)]
    payload: Payload = msgspec.field(default_factory=dict)
    priority: Priority = 0
    run_at: datetime | None = None
    delay_seconds: Annotated[float, Meta(ge=0)] = 0.0
    max_attempts: Attempts = DEFAULT_MAX_ATTEMPTS
    unique_key: Annotated[str, Meta(max_length=300)] | None = None


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """Proof of a claim: every change to a running job must present the current token."""

    job_id: int
    lease_token: UUID


class JobWait(msgspec.Struct, frozen=True, kw_only=True):
    """How long a job waited for its claim, in seconds on the database clock: since it was
    created, and since it was due (`run_at`: after a delay or a retry's backoff)."""

    created: float
    due: float


class ClaimedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job a worker holds. `attempts` counts this attempt (1 on the first run); `waited`
    only when the claim asked for it (`complete_and_claim_jobs(with_waits=True)`)."""

    id: int
    kind: str
    payload: Payload
    priority: int
    attempts: int
    max_attempts: int
    lease_token: UUID
    locked_until: datetime
    waited: JobWait | None = None

    @property
    def lease(self) -> Lease:
        return Lease(job_id=self.id, lease_token=self.lease_token)


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A job row as operators see it (lease tokens stay inside the queue)."""

    id: int
    kind: str
    payload: Payload
    state: JobState
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    locked_by: str | None
    locked_until: datetime | None
    last_error: str | None
    unique_key: str | None
    created_at: datetime
    updated_at: datetime


class ClaimCycle(msgspec.Struct, frozen=True, kw_only=True):
    """One worker cycle: the jobs completed (by id) and the jobs newly claimed."""

    completed: frozenset[int]
    claimed: list[ClaimedJob]


class ReleasedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job put back by a release or a rescue: `queued` again, or `dead` if out of attempts."""

    id: int
    kind: str
    state: JobState
    attempts: int


class QueueDepth(msgspec.Struct, frozen=True, kw_only=True):
    """How many jobs of a kind are in a state; `oldest_due_seconds` is the queued backlog's age."""

    kind: str
    state: JobState
    count: int
    oldest_due_seconds: float | None


class DeadJobCursor(msgspec.Struct, frozen=True, kw_only=True):
    """Where the next page of dead jobs starts (the last one of the previous page)."""

    updated_at: datetime
    id: int


class RetryableError(AppError):
    """Raised by a handler: this attempt failed, try again (after `delay` seconds if given)."""

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        if delay is not None and delay < 0:
            raise ValueError(f"retry delay must not be negative, got {delay}")
        self.delay = delay


class PermanentError(AppError):
    """Raised by a handler: retrying cannot help; the job becomes dead right away."""


class LeaseLostError(AppError):
    """The job's lease is no longer ours (expired and rescued, or re-claimed): nothing changed."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            f"job {job_id} lease lost: it expired or was taken over; the change was not applied"
        )
        self.job_id = job_id


class JobNotFoundError(NotFoundError):
    """No job with this id exists."""


class JobStateConflictError(ConflictError):
    """The job exists but is not in the state the operation needs."""
