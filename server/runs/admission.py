"""Held executions start: admitted in order when there is room.

An execution is held (PENDING, `held`, no entry step, no job) when it may not start yet: a
foreach item beyond the step's `max_concurrency`, or an execution beyond its workflow's
concurrency limit (or its schedule's overlap policy). `admit` starts held executions: they are
no longer held, and get their entry step and its job, in the caller's transaction, which holds
the lock that serializes admission for them (the parent's row lock for a foreach's children,
the group's advisory lock for a concurrency group). One cancelled meanwhile stays cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec

from server.engine.document import Step, StepKind
from server.queue.client import job_arrays
from server.runs import sql
from server.runs.jobs import step_job
from server.statements import Connection


async def admit(connection: Connection, execution_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Start these held executions (those still held); returns the ones started."""
    if not execution_ids:
        return []
    admitted = await sql.ADMIT_HELD.fetch(connection, execution_ids=list(execution_ids))
    if not admitted:
        return []
    versions = {row["version_id"] for row in admitted}
    entries = {
        row["version_id"]: (
            row["id"],
            Step(
                key=row["step_key"],
                kind=StepKind(row["kind"]),
                action_key=row["action_key"],
                cfg=msgspec.json.decode(row["cfg"]),
            ),
        )
        for row in await sql.ENTRY_STEPS.fetch(connection, version_ids=list(versions))
    }
    started = [row["id"] for row in admitted]
    step_ids = [entries[row["version_id"]][0] for row in admitted]
    steps = [entries[row["version_id"]][1] for row in admitted]
    await sql.INSERT_ENTRY_STEPS.fetchrow(
        connection,
        execution_ids=started,
        entry_step_ids=step_ids,
        entry_step_keys=[step.key for step in steps],
        **job_arrays(
            [
                step_job(execution_id, step_id, step)
                for execution_id, step_id, step in zip(started, step_ids, steps, strict=True)
            ]
        ),
    )
    return started
