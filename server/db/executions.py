"""The execution engine's runtime SQL: executions and step executions, on a given connection.

These statements run on the worker's hot path inside the step's completion transaction (see
`server.worker.steps`), so they are raw asyncpg with `$n` parameters, in one place. Every
function takes the connection first and never acquires one: the caller's transaction decides
what commits together. `lock_execution` is the serialization point of one execution: every
completion takes it first (`FOR UPDATE`), so two steps finishing at the same moment plan their
successors one after the other and a join is planned exactly once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Final

import msgspec

from server.engine.document import Edge, Step, StepKind
from server.engine.planning import Graph, StepState, StepStatus
from server.queue.client import Connection


class ExecutionStatus:
    PENDING: Final = "PENDING"
    RUNNING: Final = "RUNNING"
    WAITING: Final = "WAITING"
    SUCCESS: Final = "SUCCESS"
    FAILED: Final = "FAILED"
    CANCELLED: Final = "CANCELLED"


FINISHED_EXECUTION = frozenset({"SUCCESS", "FAILED", "CANCELLED"})


class ExecutionRow(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    version_num: int
    status: str
    context_data: dict[str, Any]
    steps_run: int
    created_at: dt.datetime
    started_at: dt.datetime | None


class StepResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt of a step leaves behind (already redacted)."""

    status: StepStatus
    input_data: Any = None
    result_data: Any = None
    error: str | None = None
    attempts: int
    execution_time_ms: float | None = None
    branches: frozenset[str] = frozenset()


INSERT_EXECUTION: Final = """
INSERT INTO workflow_execution
  (id, workflow_id, version_id, status, context_data, trigger_event_id, trigger_type)
VALUES ($1, $2, $3, 'PENDING', $4::jsonb, $5, $6)
"""

# The row lock every completion takes first; see the module docstring.
LOCK_EXECUTION: Final = """
SELECT e.id, e.workflow_id, e.version_id, v.version_num, e.status, e.context_data::text,
       e.steps_run, e.created_at, e.started_at
FROM workflow_execution e JOIN workflow_version v ON v.id = e.version_id
WHERE e.id = $1
FOR UPDATE OF e
"""

GET_EXECUTION: Final = LOCK_EXECUTION.replace("FOR UPDATE OF e", "")

# ON CONFLICT: a step is planned once per execution, whichever completion gets there first.
INSERT_STEP: Final = """
INSERT INTO step_execution (id, execution_id, step_id, step_key, status, created_at, branches)
VALUES (gen_random_uuid(), $1, $2, $3, $4, clock_timestamp(), '{}')
ON CONFLICT (execution_id, step_id) DO NOTHING
RETURNING id
"""

STEP_STATES: Final = """
SELECT step_key, status, branches, result_data::text AS result_data
FROM step_execution WHERE execution_id = $1
"""

MARK_STEP_RUNNING: Final = """
UPDATE step_execution
SET status = 'RUNNING', attempts = $3, started_at = coalesce(started_at, now())
WHERE execution_id = $1 AND step_key = $2 AND status IN ('PENDING', 'RUNNING', 'WAITING')
RETURNING id
"""

MARK_EXECUTION_RUNNING: Final = """
UPDATE workflow_execution
SET status = 'RUNNING', started_at = coalesce(started_at, now()), updated_at = now()
WHERE id = $1 AND status IN ('PENDING', 'WAITING')
"""

RECORD_STEP_RESULT: Final = """
UPDATE step_execution
SET status = $3::text, input_data = $4::jsonb, result_data = $5::jsonb, error = $6, attempts = $7,
    execution_time = $8, branches = $9,
    finished_at = CASE WHEN $3::text IN ('WAITING', 'RUNNING') THEN NULL ELSE now() END
WHERE execution_id = $1 AND step_key = $2
"""

RECORD_ATTEMPT_ERROR: Final = """
UPDATE step_execution SET error = $3, attempts = $4, input_data = coalesce($5::jsonb, input_data)
WHERE execution_id = $1 AND step_key = $2 AND status = 'RUNNING'
"""

SET_EXECUTION_STATUS: Final = """
UPDATE workflow_execution
SET status = $2::text, error = $3, steps_run = steps_run + $4, updated_at = now(),
    finished_at = CASE WHEN $2::text IN ('SUCCESS', 'FAILED', 'CANCELLED') THEN now() END
WHERE id = $1
"""

CANCEL_ACTIVE_STEPS: Final = """
UPDATE step_execution SET status = 'CANCELLED', finished_at = now()
WHERE execution_id = $1 AND status IN ('PENDING', 'WAITING')
"""

# Retry forgets the steps that will be planned again: cancelled ones, and the failed steps that
# ended the run. The planner then re-derives them from their finished predecessors.
FORGET_STEPS: Final = """
DELETE FROM step_execution
WHERE execution_id = $1 AND (status = 'CANCELLED' OR step_key = ANY($2::text[]))
"""
FORGET_ALL_STEPS: Final = "DELETE FROM step_execution WHERE execution_id = $1"


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


async def insert_execution(
    connection: Connection,
    *,
    execution_id: uuid.UUID,
    workflow_id: uuid.UUID,
    version_id: uuid.UUID,
    context_data: dict[str, Any],
    trigger_event_id: uuid.UUID | None,
    trigger_type: str,
) -> None:
    await connection.execute(
        INSERT_EXECUTION, execution_id, workflow_id, version_id, _json(context_data),
        trigger_event_id, trigger_type,
    )  # fmt: skip


async def lock_execution(connection: Connection, execution_id: uuid.UUID) -> ExecutionRow | None:
    return _execution(await connection.fetchrow(LOCK_EXECUTION, execution_id))


async def get_execution(connection: Connection, execution_id: uuid.UUID) -> ExecutionRow | None:
    return _execution(await connection.fetchrow(GET_EXECUTION, execution_id))


def _execution(row: Any) -> ExecutionRow | None:
    if row is None:
        return None
    values = dict(row)
    values["context_data"] = msgspec.json.decode(values["context_data"])
    return msgspec.convert(values, ExecutionRow)


async def insert_step(
    connection: Connection,
    execution_id: uuid.UUID,
    step_id: uuid.UUID,
    step_key: str,
    status: StepStatus,
) -> bool:
    """Record a planned step; False when it was planned already (a concurrent join)."""
    return (
        await connection.fetchval(INSERT_STEP, execution_id, step_id, step_key, status) is not None
    )


async def step_states(
    connection: Connection, execution_id: uuid.UUID
) -> tuple[dict[str, StepState], dict[str, Any]]:
    """Each recorded step's state, and the outputs of the steps that succeeded."""
    states: dict[str, StepState] = {}
    outputs: dict[str, Any] = {}
    for row in await connection.fetch(STEP_STATES, execution_id):
        status = StepStatus(row["status"])
        states[row["step_key"]] = StepState(status=status, branches=frozenset(row["branches"]))
        if status is StepStatus.SUCCESS and row["result_data"] is not None:
            outputs[row["step_key"]] = msgspec.json.decode(row["result_data"])
    return states, outputs


async def mark_step_running(
    connection: Connection, execution: ExecutionRow, step_key: str, attempt: int
) -> bool:
    """False when the step is no longer active (finished, or cancelled with its execution).

    The execution turns RUNNING too when it was PENDING or WAITING (as just read); a running
    one is left alone, saving a write per step.
    """
    marked = await connection.fetchval(MARK_STEP_RUNNING, execution.id, step_key, attempt)
    if marked is not None and execution.status in {"PENDING", "WAITING"}:
        await connection.execute(MARK_EXECUTION_RUNNING, execution.id)
    return marked is not None


async def record_step_result(
    connection: Connection, execution_id: uuid.UUID, step_key: str, result: StepResult
) -> None:
    await connection.execute(
        RECORD_STEP_RESULT, execution_id, step_key, result.status.value,
        _json(result.input_data), _json(result.result_data), result.error, result.attempts,
        result.execution_time_ms, sorted(result.branches),
    )  # fmt: skip


async def record_attempt_error(
    connection: Connection,
    execution_id: uuid.UUID,
    step_key: str,
    *,
    error: str,
    attempts: int,
    input_data: Any,
) -> None:
    await connection.execute(
        RECORD_ATTEMPT_ERROR, execution_id, step_key, error, attempts, _json(input_data)
    )


async def set_execution_status(
    connection: Connection,
    execution_id: uuid.UUID,
    status: str,
    *,
    error: str | None = None,
    steps_run: int = 0,
) -> None:
    await connection.execute(SET_EXECUTION_STATUS, execution_id, status, error, steps_run)


async def cancel_active_steps(connection: Connection, execution_id: uuid.UUID) -> None:
    await connection.execute(CANCEL_ACTIVE_STEPS, execution_id)


async def forget_steps(
    connection: Connection, execution_id: uuid.UUID, step_keys: list[str] | None
) -> None:
    """Delete cancelled steps and `step_keys` (None: every step) so planning redoes them."""
    if step_keys is None:
        await connection.execute(FORGET_ALL_STEPS, execution_id)
    else:
        await connection.execute(FORGET_STEPS, execution_id, step_keys)


GRAPH_STEPS: Final = """
SELECT id, step_key, name, kind, action_key, cfg::text AS cfg
FROM workflow_step WHERE version_id = $1 ORDER BY position, step_key
"""
GRAPH_EDGES: Final = """
SELECT f.step_key AS source, t.step_key AS target, e.branch_key
FROM workflow_edge e
JOIN workflow_step f ON f.id = e.from_step_id
JOIN workflow_step t ON t.id = e.to_step_id
WHERE e.version_id = $1
"""


async def load_graph(connection: Connection, version_id: uuid.UUID) -> Graph:
    """A version's steps and edges as a planning graph (callers cache it: versions are frozen)."""
    rows = await connection.fetch(GRAPH_STEPS, version_id)
    steps = [
        Step(
            key=row["step_key"],
            name=row["name"],
            kind=StepKind(row["kind"]),
            action_key=row["action_key"],
            cfg=msgspec.json.decode(row["cfg"]),
        )
        for row in rows
    ]
    step_ids = {row["step_key"]: str(row["id"]) for row in rows}
    edges = [
        Edge(source=row["source"], target=row["target"], branch_key=row["branch_key"])
        for row in await connection.fetch(GRAPH_EDGES, version_id)
    ]
    return Graph.build(steps, step_ids, edges)
