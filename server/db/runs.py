"""Starting executions and enqueueing step jobs (the engine's writes that touch the queue).

`start_execution` pins the workflow's latest published version, records the execution and its
entry step, and enqueues the entry step's job — all on the caller's connection, so it commits
with the caller's own writes (the trigger event that caused it) or not at all.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec
import structlog

from server.db.executions import (
    cancel_active_steps,
    insert_execution,
    insert_step,
    set_execution_status,
)
from server.engine.document import Step, StepKind
from server.engine.planning import StepStatus
from server.engine.step_policy import step_policy
from server.errors import ConflictError, NotFoundError
from server.queue.client import Connection, delete_queued_jobs_by_key_prefix, enqueue_job
from server.queue.jobs import NewJob

log = structlog.get_logger(__name__)

STEP_JOB_KIND: Final = "workflow_step"
# A step job may be claimed more often than the step's own attempts: a worker killed mid-step
# or a lost database connection costs an attempt too. The step's policy decides when an
# action's failures are final; these extra attempts only absorb infrastructure failures.
INFRASTRUCTURE_ATTEMPTS: Final = 5

LATEST_PUBLISHED_ENTRY: Final = """
SELECT v.id AS version_id, s.id AS step_id, s.step_key, s.kind, s.action_key, s.cfg::text AS cfg,
       d.is_active
FROM workflow_definition d
JOIN LATERAL (
  SELECT id FROM workflow_version
  WHERE workflow_id = d.id AND status = 'published'
  ORDER BY version_num DESC LIMIT 1
) v ON true
JOIN workflow_step s ON s.version_id = v.id
WHERE d.id = $1
  AND NOT EXISTS (SELECT 1 FROM workflow_edge e WHERE e.to_step_id = s.id)
"""

# The name a failure is logged with; read only when something failed (never on the hot path).
WORKFLOW_NAME: Final = "SELECT name FROM workflow_definition WHERE id = $1"
EXECUTION_WORKFLOW: Final = """
SELECT d.id AS workflow_id, d.name
FROM workflow_execution e JOIN workflow_definition d ON d.id = e.workflow_id
WHERE e.id = $1
"""


async def workflow_name(connection: Connection, workflow_id: uuid.UUID) -> str:
    """The workflow's name ('' once it is deleted), for logging a failure."""
    return str(await connection.fetchval(WORKFLOW_NAME, workflow_id) or "")


def step_job_key(execution_id: uuid.UUID, step_id: uuid.UUID, *, resume: bool = False) -> str:
    """At most one live job per step of an execution (a delay's wake-up is a second key)."""
    return f"step:{execution_id}:{step_id}" + (":resume" if resume else "")


def step_job(
    execution_id: uuid.UUID,
    step_id: uuid.UUID,
    step: Step,
    *,
    resume: bool = False,
    delay_seconds: float = 0.0,
) -> NewJob:
    payload: dict[str, Any] = {"execution_id": str(execution_id), "step_key": step.key}
    if resume:
        payload["resume"] = True
    return NewJob(
        kind=STEP_JOB_KIND,
        payload=payload,
        max_attempts=step_policy(step).max_attempts + INFRASTRUCTURE_ATTEMPTS,
        unique_key=step_job_key(execution_id, step_id, resume=resume),
        delay_seconds=delay_seconds,
    )


async def schedule_step(
    connection: Connection, execution_id: uuid.UUID, step_id: uuid.UUID, step: Step
) -> bool:
    """Record a planned step and enqueue its job, unless it was planned already."""
    if not await insert_step(connection, execution_id, step_id, step.key, StepStatus.PENDING):
        return False
    await enqueue_job(connection, step_job(execution_id, step_id, step))
    return True


async def start_execution(
    connection: Connection,
    *,
    workflow_id: uuid.UUID,
    trigger: dict[str, Any],
    trigger_event_id: uuid.UUID | None,
    trigger_type: str,
) -> uuid.UUID:
    """Start the workflow's latest published version; call inside the caller's transaction."""
    row = await connection.fetchrow(LATEST_PUBLISHED_ENTRY, workflow_id)
    if row is None:
        raise NotFoundError(
            f"workflow {workflow_id} not found or has no published version; publish one first"
        )
    if not row["is_active"]:
        raise ConflictError(f"workflow {workflow_id} is inactive; set is_active to run it")
    entry = Step(
        key=row["step_key"],
        kind=StepKind(row["kind"]),
        action_key=row["action_key"],
        cfg=msgspec.json.decode(row["cfg"]),
    )
    execution_id = uuid.uuid4()
    await insert_execution(
        connection,
        execution_id=execution_id,
        workflow_id=workflow_id,
        version_id=row["version_id"],
        context_data={"trigger": trigger},
        trigger_event_id=trigger_event_id,
        trigger_type=trigger_type,
    )
    await schedule_step(connection, execution_id, row["step_id"], entry)
    return execution_id


async def fail_execution(connection: Connection, execution_id: uuid.UUID, error: str) -> None:
    """Stop an execution: FAILED, its queued steps withdrawn, running ones left to finish."""
    await set_execution_status(connection, execution_id, "FAILED", error=error, steps_run=1)
    await stop_pending_work(connection, execution_id)
    workflow = await connection.fetchrow(EXECUTION_WORKFLOW, execution_id)
    log.error(
        "execution_failed",
        error=error,  # callers pass an error already redacted of secrets
        execution_id=str(execution_id),
        workflow_id=str(workflow["workflow_id"]) if workflow else None,
        workflow_name=workflow["name"] if workflow else None,
    )


async def stop_pending_work(connection: Connection, execution_id: uuid.UUID) -> None:
    """Cancel an execution's pending and waiting steps and withdraw their queued jobs."""
    await cancel_active_steps(connection, execution_id)
    await delete_queued_jobs_by_key_prefix(connection, f"step:{execution_id}:")
