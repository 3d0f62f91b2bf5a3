"""Operator control of executions: manual runs, cancel, retry (each one transaction).

All three lock the execution row like every step completion does, so a cancel or retry never
interleaves with a step planning its successors.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from server.db import executions as runs_sql
from server.db.engine import transaction
from server.db.runs import start_execution, step_job, stop_pending_work
from server.engine.planning import Graph, StepState, StepStatus, plan
from server.errors import ConflictError, NotFoundError
from server.queue.client import Connection, enqueue_job

MANUAL_TRIGGER_KEY: Final = "manual"

INSERT_TRIGGER_EVENT: Final = """
INSERT INTO trigger_event (id, trigger_key, trigger_type, payload, idempotency_key, source, outcome)
VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7)
"""


# Retry forgets the steps that will be planned again (cancelled ones, and `$2`: the given keys;
# NULL: every step), returning their attempts (the retried ones, then the last: the row itself,
# as `execution_queries.attempts_history` shows it) so the steps run again keep them. Locks:
# the execution's row is locked first by the caller, then these step rows.
FORGET_STEPS: Final = """
DELETE FROM step_execution
WHERE execution_id = $1 AND ($2::text[] IS NULL OR status = 'CANCELLED' OR step_key = ANY($2))
RETURNING step_key, (attempts_history || CASE
    WHEN status IN ('SUCCESS', 'FAILED') AND finished_at IS NOT NULL AND attempts > 0
    THEN jsonb_build_array(jsonb_build_object(
        'attempt', attempts, 'status', status, 'error', error,
        'started_at', finished_at - coalesce(execution_time, 0) * interval '1 millisecond',
        'finished_at', finished_at, 'duration_ms', execution_time))
    ELSE '[]'::jsonb END)::text AS history
"""
RESTORE_HISTORIES: Final = """
UPDATE step_execution s SET attempts_history = old.history::jsonb || s.attempts_history
FROM unnest($2::text[], $3::text[]) AS old (step_key, history)
WHERE s.execution_id = $1 AND s.step_key = old.step_key
"""
# A retry on another version: the execution and the steps it keeps (same keys) move to it.
MOVE_TO_VERSION: Final = """
WITH moved AS (
    UPDATE step_execution s SET step_id = ws.id
    FROM workflow_step ws
    WHERE s.execution_id = $1 AND ws.version_id = $2 AND ws.step_key = s.step_key
)
UPDATE workflow_execution SET version_id = $2, updated_at = now() WHERE id = $1
"""
LATEST_PUBLISHED: Final = """
SELECT id FROM workflow_version WHERE workflow_id = $1 AND status = 'published'
ORDER BY version_num DESC LIMIT 1
"""


async def run_manually(
    workflow_id: uuid.UUID, run_input: Any, *, source: dict[str, str] | None = None
) -> uuid.UUID:
    """Start the workflow now with `run_input` as its trigger payload; returns the execution.
    `source` is recorded on its event (with the workflow id) when given (a replay)."""
    async with transaction() as tx:
        connection: Connection = tx.connection
        event_id = uuid.uuid4()
        await connection.execute(
            INSERT_TRIGGER_EVENT, event_id, MANUAL_TRIGGER_KEY, "manual",
            msgspec.json.encode(run_input).decode(), None,
            msgspec.json.encode({**(source or {}), "workflow_id": str(workflow_id)}).decode(),
            "accepted",
        )  # fmt: skip
        return await start_execution(
            connection,
            workflow_id=workflow_id,
            trigger=run_input,
            trigger_event_id=event_id,
            trigger_type="manual",
        )


async def cancel_execution(execution_id: uuid.UUID) -> None:
    """Cancel: pending jobs are withdrawn; a running step may finish but starts nothing new."""
    async with transaction() as tx:
        connection: Connection = tx.connection
        execution = await _locked(connection, execution_id)
        if execution.status in runs_sql.FINISHED_EXECUTION:
            raise ConflictError(
                f"execution {execution_id} is already {execution.status}; only unfinished "
                "executions can be cancelled"
            )
        await runs_sql.set_execution_status(connection, execution_id, "CANCELLED")
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
        if execution.status != "FAILED":
            raise ConflictError(
                f"execution {execution_id} is {execution.status}; only FAILED executions can be "
                "retried"
            )
        version_id = execution.version_id
        if latest:
            version_id = await _latest_published(connection, execution.workflow_id)
        graph = await runs_sql.load_graph(connection, version_id)
        states, _ = await runs_sql.step_states(connection, execution_id)
        if from_start:
            forget = None
        elif version_id != execution.version_id:
            kept = kept_on_new_version(graph, states)
            forget = [key for key in states if key not in kept]
        else:
            forget = failures_that_ended(graph, states)
        histories = await connection.fetch(FORGET_STEPS, execution_id, forget)
        if version_id != execution.version_id:
            await connection.execute(MOVE_TO_VERSION, execution_id, version_id)
        states, _ = await runs_sql.step_states(connection, execution_id)
        for key in plan(graph, states).run:
            step_id = uuid.UUID(graph.step_ids[key])
            if await runs_sql.insert_step(
                connection, execution_id, step_id, key, StepStatus.PENDING
            ):
                await enqueue_job(connection, step_job(execution_id, step_id, graph.steps[key]))
        await connection.execute(
            RESTORE_HISTORIES, execution_id,
            [row["step_key"] for row in histories], [row["history"] for row in histories],
        )  # fmt: skip
        await runs_sql.set_execution_status(connection, execution_id, "RUNNING")


async def _latest_published(connection: Connection, workflow_id: uuid.UUID) -> uuid.UUID:
    version_id: uuid.UUID | None = await connection.fetchval(LATEST_PUBLISHED, workflow_id)
    if version_id is None:  # cannot happen: the execution runs a published version
        raise NotFoundError(f"workflow {workflow_id} has no published version")
    return version_id


def kept_on_new_version(graph: Graph, states: Mapping[str, StepState]) -> set[str]:
    """The steps a retry on another version keeps: succeeded (or skipped) ones the new graph
    still has, all of whose predecessors in the new graph are kept too."""
    kept: set[str] = set()
    changed = True
    while changed:
        changed = False
        for key, state in states.items():
            if (
                key not in kept
                and key in graph.steps
                and state.status in (StepStatus.SUCCESS, StepStatus.SKIPPED)
                and all(edge.source in kept for edge in graph.incoming[key])
            ):
                kept.add(key)
                changed = True
    return kept


def failures_that_ended(graph: Graph, states: Mapping[str, StepState]) -> list[str]:
    """Failed steps none of whose successors was decided: the failures that stopped the run.

    A failure whose error edge was taken (its successors have states) was handled and stays.
    """
    return [
        key
        for key, state in states.items()
        if state.status is StepStatus.FAILED
        and not any(edge.target in states for edge in graph.outgoing[key])
    ]


async def _locked(connection: Connection, execution_id: uuid.UUID) -> runs_sql.ExecutionRow:
    execution = await runs_sql.lock_execution(connection, execution_id)
    if execution is None:
        raise NotFoundError(f"execution {execution_id} not found")
    return execution
