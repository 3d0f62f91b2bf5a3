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


async def run_manually(workflow_id: uuid.UUID, run_input: dict[str, Any]) -> uuid.UUID:
    """Start the workflow now with `run_input` as its trigger payload; returns the execution."""
    async with transaction() as tx:
        connection: Connection = tx.connection
        event_id = uuid.uuid4()
        await connection.execute(
            INSERT_TRIGGER_EVENT, event_id, MANUAL_TRIGGER_KEY, "manual",
            msgspec.json.encode(run_input).decode(), None,
            msgspec.json.encode({"workflow_id": str(workflow_id)}).decode(), "accepted",
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


async def retry_execution(execution_id: uuid.UUID, *, from_start: bool) -> None:
    """Run a FAILED execution again on the same version: its failed steps, or from the start."""
    async with transaction() as tx:
        connection: Connection = tx.connection
        execution = await _locked(connection, execution_id)
        if execution.status != "FAILED":
            raise ConflictError(
                f"execution {execution_id} is {execution.status}; only FAILED executions can be "
                "retried"
            )
        graph = await runs_sql.load_graph(connection, execution.version_id)
        states, _ = await runs_sql.step_states(connection, execution_id)
        await runs_sql.forget_steps(
            connection, execution_id, None if from_start else failures_that_ended(graph, states)
        )
        states, _ = await runs_sql.step_states(connection, execution_id)
        for key in plan(graph, states).run:
            step_id = uuid.UUID(graph.step_ids[key])
            if await runs_sql.insert_step(
                connection, execution_id, step_id, key, StepStatus.PENDING
            ):
                await enqueue_job(connection, step_job(execution_id, step_id, graph.steps[key]))
        await runs_sql.set_execution_status(connection, execution_id, "RUNNING")


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
