"""Held executions start: admitted in order when there is room.

An execution is held (PENDING, `held`, no entry step, no job) when it may not start yet: a
foreach item beyond the step's `max_concurrency`, or an execution beyond its workflow's
concurrency limit (or its schedule's overlap policy). `admit` starts held executions: they are
no longer held, and get their entry step and its job, in the caller's transaction. A
concurrency group's admissions are serialized by the group's advisory lock; a foreach's need
no lock at all (`sql.CHILD_ENDED`: each child's end admits one held child, the first in item
order that no concurrent admission has locked; `start_admitted` then starts it). One cancelled
meanwhile stays cancelled: an admission matches only rows still held and PENDING, under their
row lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Final

import msgspec

from server.engine.document import Step, StepKind
from server.queue.client import job_arrays
from server.queue.jobs import NewJob
from server.runs import sql
from server.runs.jobs import step_job
from server.statements import Connection

# Entry steps of published versions (they never change), kept per process.
_ENTRIES: dict[uuid.UUID, tuple[uuid.UUID, Step]] = {}
_ENTRY_CACHE_SIZE: Final = 512


async def admit(connection: Connection, execution_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Start these held executions (those still held); returns the ones started."""
    if not execution_ids:
        return []
    admitted = await sql.ADMIT_HELD.fetch(connection, execution_ids=list(execution_ids))
    await start_admitted(connection, [(row["id"], row["version_id"]) for row in admitted])
    return [row["id"] for row in admitted]


async def start_admitted(
    connection: Connection,
    admitted: Sequence[tuple[uuid.UUID, uuid.UUID]],
    *,
    enqueue: bool = True,
) -> list[NewJob]:
    """Record the entry step of each admitted (execution, version) and enqueue its job; or,
    without `enqueue`, return the jobs for the caller to run (it hands its own job on to one).
    """
    if not admitted:
        return []
    missing = list({version for _, version in admitted if version not in _ENTRIES})
    if missing:
        if len(_ENTRIES) + len(missing) > _ENTRY_CACHE_SIZE:
            _ENTRIES.clear()
        for row in await sql.ENTRY_STEPS.fetch(connection, version_ids=missing):
            _ENTRIES[row["version_id"]] = (
                row["id"],
                Step(
                    key=row["step_key"],
                    kind=StepKind(row["kind"]),
                    action_key=row["action_key"],
                    cfg=msgspec.json.decode(row["cfg"]),
                ),
            )
    started = [execution_id for execution_id, _ in admitted]
    entries = [_ENTRIES[version] for _, version in admitted]
    jobs = [
        step_job(execution_id, step_id, step)
        for execution_id, (step_id, step) in zip(started, entries, strict=True)
    ]
    await sql.INSERT_ENTRY_STEPS.fetchrow(
        connection,
        execution_ids=started,
        entry_step_ids=[step_id for step_id, _ in entries],
        entry_step_keys=[step.key for _, step in entries],
        **job_arrays(jobs if enqueue else []),
    )
    return jobs
