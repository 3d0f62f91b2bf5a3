"""Operators' control of executions: cancel, retry, and failing an execution for good.

Cancel and retry are one transaction each and lock the execution row first, like every step
completion does, so they never interleave with a step planning its successors. What a retry
runs again is decided in `server.engine.planning` (`failures_that_ended`,
`kept_on_new_version`); starting a new execution is `server.runs.intake`'s alone.
"""

from __future__ import annotations

import uuid

import structlog

from server.db.pool import transaction
from server.engine.planning import (
    FINISHED_EXECUTION,
    ExecutionStatus,
    StepStatus,
    failures_that_ended,
    kept_on_new_version,
    plan,
)
from server.errors import ConflictError, NotFoundError
from server.queue.client import delete_queued_jobs_by_key_prefix, enqueue_jobs
from server.runs import sql, store
from server.runs.jobs import STEP_JOB_KIND, execution_job_prefix, step_job
from server.runs.metrics import EXECUTIONS_FINISHED
from server.runs.store import PlannedStep
from server.statements import Connection

log = structlog.get_logger(__name__)


async def cancel_execution(execution_id: uuid.UUID) -> None:
    """Cancel: pending jobs are withdrawn; a running step may finish but starts nothing new."""
    async with transaction() as tx:
        connection: Connection = tx.connection
        execution = await _locked(connection, execution_id)
        if execution.status in FINISHED_EXECUTION:
            raise ConflictError(
                f"execution {execution_id} is already {execution.status}; only unfinished "
                "executions can be cancelled"
            )
        await store.set_execution_status(connection, execution_id, ExecutionStatus.CANCELLED)
        await stop_pending_work(connection, execution_id)


async def retry_execution(
    execution_id: uuid.UUID, *, from_start: bool, latest: bool = False
) -> None:
    """Run a FAILED execution again: its failed steps, or from the start (`from_start`); on
    its pinned version, or on the workflow's latest published one (`latest`, fixing forward).

    On the latest version, the steps that succeeded keep their results and do not run again
    (matched by key, when the new version still has the step and every step leading to it was
    kept too): a notification sent before the failure is not sent twice. Everything else is
    planned again on the new version. The steps that run again keep their earlier attempts.
    """
    async with transaction() as tx:
        connection: Connection = tx.connection
        execution = await _locked(connection, execution_id)
        if execution.status is not ExecutionStatus.FAILED:
            raise ConflictError(
                f"execution {execution_id} is {execution.status}; only FAILED executions can be "
                "retried"
            )
        version_id = execution.version_id
        if latest:
            version_id = await _latest_published(connection, execution.workflow_id)
        graph = await store.load_graph(connection, version_id)
        states, _ = await store.step_states(connection, execution_id)
        if from_start:
            forget = None
        elif version_id != execution.version_id:
            kept = kept_on_new_version(graph, states)
            forget = [key for key in states if key not in kept]
        else:
            forget = failures_that_ended(graph, states)
        histories = await sql.FORGET_STEPS.fetch(
            connection, execution_id=execution_id, step_keys=forget
        )
        if version_id != execution.version_id:
            await sql.MOVE_TO_VERSION.execute(
                connection, execution_id=execution_id, version_id=version_id
            )
        states, _ = await store.step_states(connection, execution_id)
        planned = [
            PlannedStep(step_id=uuid.UUID(graph.step_ids[key]), key=key, status=StepStatus.PENDING)
            for key in plan(graph, states).run
        ]
        inserted = await store.plan_steps(connection, execution_id, planned)
        await enqueue_jobs(
            connection,
            [
                step_job(execution_id, step.step_id, graph.steps[step.key])
                for step in planned
                if step.key in inserted
            ],
        )
        await sql.RESTORE_HISTORIES.execute(
            connection, execution_id=execution_id,
            step_keys=[row["step_key"] for row in histories],
            histories=[row["history"] for row in histories],
        )  # fmt: skip
        await store.set_execution_status(connection, execution_id, ExecutionStatus.RUNNING)


async def fail_execution(connection: Connection, execution_id: uuid.UUID, error: str) -> None:
    """Stop an execution: FAILED, its queued steps withdrawn, running ones left to finish.
    Call with the execution locked, in the transaction that decided it."""
    await store.set_execution_status(
        connection, execution_id, ExecutionStatus.FAILED, error=error, steps_run=1
    )
    await stop_pending_work(connection, execution_id)
    workflow_id, name = await store.execution_workflow(connection, execution_id)
    EXECUTIONS_FINISHED.labels(ExecutionStatus.FAILED.value, str(workflow_id)).inc()
    log.error(
        "execution_failed",
        error=error,  # callers pass an error already redacted of secrets
        execution_id=str(execution_id),
        workflow_id=workflow_id,
        workflow_name=name,
    )


async def stop_pending_work(connection: Connection, execution_id: uuid.UUID) -> None:
    """Cancel an execution's pending and waiting steps, withdraw their queued jobs, and cancel
    its unfinished child executions (and theirs): a child never outlives its parent."""
    await store.cancel_active_steps(connection, execution_id)
    await delete_queued_jobs_by_key_prefix(connection, execution_job_prefix(execution_id))
    await store.cancel_children(
        connection, execution_id, step_run=None,
        reason=f"cancelled: its parent execution {execution_id} ended",
    )  # fmt: skip


async def fail_dead_steps(connection: Connection) -> int:
    """Fail the executions whose step job died outside its handler; returns how many."""
    failed = 0
    for row in await sql.DEAD_STEP_JOBS.fetch(connection, job_kind=STEP_JOB_KIND):
        execution_id = uuid.UUID(row["execution_id"])
        error = f"step {row['step_key']!r} could not run: {row['last_error']}"[:2000]
        async with connection.transaction():
            execution = await store.lock_execution(connection, execution_id)
            if execution is None or execution.status in FINISHED_EXECUTION:
                continue
            await sql.FAIL_DEAD_STEP.execute(
                connection, execution_id=execution_id, step_key=row["step_key"], error=error
            )
            await fail_execution(connection, execution_id, error)
            failed += 1
    return failed


async def _latest_published(connection: Connection, workflow_id: uuid.UUID) -> uuid.UUID:
    version_id: uuid.UUID | None = await sql.LATEST_PUBLISHED.fetchval(
        connection, workflow_id=workflow_id
    )
    if version_id is None:  # cannot happen: the execution runs a published version
        raise NotFoundError(f"workflow {workflow_id} has no published version")
    return version_id


async def _locked(connection: Connection, execution_id: uuid.UUID) -> store.ExecutionRow:
    execution = await store.lock_execution(connection, execution_id)
    if execution is None:
        raise NotFoundError(f"execution {execution_id} not found")
    return execution
