"""The `execution_ended` job handler: what follows an execution's end, exactly once.

The database trigger `workflow_execution_ended` enqueues one such job in the transaction that
ends an execution which is a child, counts in a concurrency or overlap group, or FAILED
(whatever ended it: a step, a cancel, a failure, the dead-job sweep), so no path can forget
it. Its handler:

- a FAILED execution of a workflow with `on_failure` starts that workflow once, with
  `trigger` = {"failed_execution_id", "workflow_id", "workflow_name", "error",
  "failed_steps": [{"step_key", "error"}], "trigger"}, as an event of the `on_failure`
  trigger whose idempotency key is the job's (an execution started that way starts nothing
  more when it fails), in a transaction of its own;
- then, in the transaction that completes the job: a child's end moves its parent's waiting
  step on (`server.runs.calls.child_ended`), and a group's execution ending admits the
  group's next held executions (`server.runs.concurrency.admit_next`).
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec
import structlog

from server.engine.document import WorkflowOptions
from server.engine.planning import ExecutionStatus
from server.queue.handlers import JobContext, JobHandler
from server.runs import sql
from server.runs.calls import EndedChild, WorkflowNotRunnable, child_ended, resolve_route
from server.runs.concurrency import admit_next
from server.runs.intake import accept_event
from server.statements import Connection

log = structlog.get_logger(__name__)

ENDED_JOB_KIND: Final = "execution_ended"
FAILURE_TRIGGER_KEY: Final = "on_failure"


class EndedExecution(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    status: ExecutionStatus
    error: str | None
    workflow_id: uuid.UUID
    workflow_name: str
    trigger_type: str
    parent_execution_id: uuid.UUID | None
    parent_step_run: uuid.UUID | None
    concurrency_key: str | None
    overlap_key: str | None
    options: WorkflowOptions
    trigger: Any


class ExecutionEnded:
    """Callable job handler for `execution_ended` jobs; `steps` is the `workflow_step`
    handler, which runs a fan-out's next item here when its slot is handed on in this job."""

    def __init__(self, steps: JobHandler) -> None:
        self._steps = steps

    async def __call__(self, job: JobContext) -> None:
        execution_id = uuid.UUID(job.payload["execution_id"])
        if (
            job.payload.get("status") != ExecutionStatus.FAILED
            and not job.payload.get("grouped")
            and job.payload.get("parent_step_run") is not None
        ):  # the common end of a fan-out's item: the job's payload says all that is needed
            async with job.transaction() as connection:
                admitted = await child_ended(
                    connection, _child_of(execution_id, job.payload), run_here=True
                )
                if admitted is not None:  # this job runs the next item's first step
                    job.continue_with(admitted, change_kind=True)
            if admitted is not None:
                await self._steps(job)
            return
        async with job.connection() as connection:
            ended = await _ended(connection, execution_id)
            if (
                ended is not None
                and ended.status is ExecutionStatus.FAILED
                and ended.options.on_failure is not None
                and ended.trigger_type != FAILURE_TRIGGER_KEY
            ):
                # Its own transaction, first: the failure workflow's concurrency group is
                # never locked together with this execution's groups (two workflows that are
                # each other's failure workflow cannot deadlock). The event's idempotency key
                # is this job's: a retried job finds it and starts nothing twice.
                async with connection.transaction():
                    await _start_failure_workflow(connection, ended, job.job_id)
        async with job.transaction() as connection:
            if ended is None:  # deleted with its workflow: its parent must still know
                await _deleted_child_ended(connection, execution_id, job.payload)
                return
            if ended.parent_execution_id is not None and ended.parent_step_run is not None:
                await child_ended(
                    connection,
                    EndedChild(
                        execution_id=ended.id,
                        status=ended.status,
                        parent_execution_id=ended.parent_execution_id,
                        parent_step_run=ended.parent_step_run,
                    ),
                )
            if ended.concurrency_key is not None or ended.overlap_key is not None:
                await admit_next(
                    connection,
                    ended.workflow_id,
                    concurrency_key=ended.concurrency_key,
                    overlap_key=ended.overlap_key,
                )


async def _deleted_child_ended(
    connection: Connection, execution_id: uuid.UUID, payload: dict[str, Any]
) -> None:
    if payload.get("parent_execution_id") is None or payload.get("parent_step_run") is None:
        return
    await child_ended(connection, _child_of(execution_id, {**payload, "status": "CANCELLED"}))


def _child_of(execution_id: uuid.UUID, payload: dict[str, Any]) -> EndedChild:
    """The ended child as the trigger's payload describes it."""
    return EndedChild(
        execution_id=execution_id,
        status=ExecutionStatus(payload["status"]),
        parent_execution_id=uuid.UUID(payload["parent_execution_id"]),
        parent_step_run=uuid.UUID(payload["parent_step_run"]),
    )


async def _ended(connection: Connection, execution_id: uuid.UUID) -> EndedExecution | None:
    row = await sql.ENDED_EXECUTION.fetchrow(connection, execution_id=execution_id)
    if row is None:
        return None
    values = dict(row)
    values["options"] = msgspec.json.decode(values["options"] or "{}")
    values["trigger"] = (
        None if values["trigger"] is None else msgspec.json.decode(values["trigger"])
    )
    return msgspec.convert(values, EndedExecution)


async def _start_failure_workflow(
    connection: Connection, ended: EndedExecution, job_id: int
) -> None:
    """One execution of the failure workflow, with the failed execution's summary."""
    on_failure = ended.options.on_failure
    assert on_failure is not None  # noqa: S101 - checked by the caller
    failed_steps = [
        {"step_key": row["step_key"], "error": row["error"]}
        for row in await sql.FAILED_STEPS.fetch(connection, execution_id=ended.id)
    ]
    summary = {
        "failed_execution_id": str(ended.id),
        "workflow_id": str(ended.workflow_id),
        "workflow_name": ended.workflow_name,
        "error": ended.error,
        "failed_steps": failed_steps,
        "trigger": ended.trigger,
    }
    try:
        route = await resolve_route(connection, on_failure.workflow)
    except WorkflowNotRunnable as error:
        log.error(
            "failure_workflow_not_started",
            reason=str(error),
            failed_execution_id=str(ended.id),
            workflow_id=str(ended.workflow_id),
        )
        return
    accepted = await accept_event(
        connection,
        trigger_key=FAILURE_TRIGGER_KEY,
        trigger_type=FAILURE_TRIGGER_KEY,
        payload=summary,
        idempotency_key=f"{ended.id}:{job_id}",
        source={"failed_execution_id": str(ended.id), "workflow_id": str(route.workflow_id)},
        routes=[route],
    )
    log.info(
        "failure_workflow_started",
        failed_execution_id=str(ended.id),
        execution_ids=[str(id_) for id_ in accepted.execution_ids],
    )
