"""The runtime's store: the statements of `server.runs.sql`, run on a given connection.

Every function takes the connection first and never acquires one: the caller's transaction
decides what commits together. Values go in as the statements' named parameters and come back
as structs; JSON is stored so PostgreSQL always accepts it (a NUL character, which a template
can produce and jsonb refuses, is stored as U+FFFD), so a step's record is never refused.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from server.crypto.aead import Keyring
from server.db.variables import variables_from_json
from server.engine.document import Edge, Step, StepKind
from server.engine.planning import ExecutionStatus, Graph, StepState, StepStatus
from server.queue.client import job_arrays, settle_job_args
from server.queue.jobs import Lease, NewJob
from server.runs import sql
from server.statements import Connection


class ExecutionRow(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    version_num: int
    status: ExecutionStatus
    context_data: dict[str, Any]
    steps_run: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    traceparent: str | None = None  # the intake span's (server.tracing); None when untraced


class StepResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt of a step leaves behind (already redacted)."""

    status: StepStatus
    input_data: Any = None
    result_data: Any = None
    error: str | None = None
    attempts: int
    execution_time_ms: float | None = None
    branches: frozenset[str] = frozenset()


class PlannedStep(msgspec.Struct, frozen=True, kw_only=True):
    step_id: uuid.UUID
    key: str
    status: StepStatus


def json_text(value: Any) -> str | None:
    """`value` as JSON text jsonb accepts (NUL characters stored as U+FFFD)."""
    if value is None:
        return None
    text = msgspec.json.encode(value)
    if b"\\u0000" in text:
        text = msgspec.json.encode(_without_nul(value))
    return text.decode()


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    return value


def _text(value: str | None) -> str | None:
    """A text column's value without NUL characters (PostgreSQL refuses them)."""
    return None if value is None else value.replace("\x00", "\ufffd")


# --- Reading -------------------------------------------------------------------------------


async def lock_execution(connection: Connection, execution_id: uuid.UUID) -> ExecutionRow | None:
    return _execution(await sql.LOCK_EXECUTION.fetchrow(connection, execution_id=execution_id))


async def get_execution(connection: Connection, execution_id: uuid.UUID) -> ExecutionRow | None:
    return _execution(await sql.GET_EXECUTION.fetchrow(connection, execution_id=execution_id))


def _execution(row: Any) -> ExecutionRow | None:
    if row is None:
        return None
    values = dict(row)
    values["context_data"] = msgspec.json.decode(values["context_data"])
    return msgspec.convert(values, ExecutionRow)


async def step_states(
    connection: Connection, execution_id: uuid.UUID, known: Collection[str] = ()
) -> tuple[dict[str, StepState], dict[str, Any]]:
    """Each recorded step's state, and the outputs of the steps that succeeded (but for those
    in `known`, which the caller has)."""
    states: dict[str, StepState] = {}
    outputs: dict[str, Any] = {}
    rows = await sql.STEP_STATES.fetch(
        connection, execution_id=execution_id, known_keys=list(known)
    )
    for row in rows:
        states[row["step_key"]] = StepState(
            status=StepStatus(row["status"]), branches=frozenset(row["branches"])
        )
        if row["result_data"] is not None:
            outputs[row["step_key"]] = msgspec.json.decode(row["result_data"])
    return states, outputs


async def load_graph(connection: Connection, version_id: uuid.UUID) -> Graph:
    """A version's steps and edges as a planning graph (callers cache it: versions are frozen)."""
    rows = await sql.GRAPH_STEPS.fetch(connection, version_id=version_id)
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
        for row in await sql.GRAPH_EDGES.fetch(connection, version_id=version_id)
    ]
    return Graph.build(steps, step_ids, edges)


async def workflow_name(connection: Connection, workflow_id: uuid.UUID) -> str:
    """The workflow's name ('' once it is deleted), for logging a failure."""
    return str(await sql.WORKFLOW_NAME.fetchval(connection, workflow_id=workflow_id) or "")


async def execution_workflow(
    connection: Connection, execution_id: uuid.UUID
) -> tuple[str | None, str | None]:
    """(workflow id, name) of an execution, for logging its failure."""
    row = await sql.EXECUTION_WORKFLOW.fetchrow(connection, execution_id=execution_id)
    return (str(row["workflow_id"]), row["name"]) if row else (None, None)


# --- Running a step ------------------------------------------------------------------------


class StepStart(msgspec.Struct, frozen=True, kw_only=True):
    """What `start_step` read: the step's execution and inputs, and whether it may run."""

    execution: ExecutionRow
    marked: bool  # False: the step was decided meanwhile, or its execution is over
    raced: bool  # True: the execution changed meanwhile; start again
    version: str  # the execution's version the states are as of (see SETTLE_STEP)
    states: dict[str, StepState]  # this step RUNNING, as this statement made it
    outputs: dict[str, Any]
    variables: dict[str, object]
    secret_keys: frozenset[str]


async def start_step(
    connection: Connection,
    execution_id: uuid.UUID,
    step_key: str,
    attempt: int,
    keyring: Keyring,
    *,
    resume: bool,
) -> StepStart | None:
    """Mark the step running (and its execution) and read its inputs; None: no execution.

    Raises:
        SecretDecryptionError: a secret variable cannot be decrypted with this keyring.
    """
    row = await sql.START_STEP.fetchrow(
        connection, execution_id=execution_id, step_key=step_key, attempt=attempt, resume=resume
    )
    execution = _execution(row)
    if row is None or execution is None:
        return None
    states: dict[str, StepState] = {}
    outputs: dict[str, Any] = {}
    for key, status, branches, output in msgspec.json.decode(row["steps"]):
        states[key] = StepState(status=StepStatus(status), branches=frozenset(branches))
        if output is not None:
            outputs[key] = output
    if row["marked"]:
        states[step_key] = StepState(status=StepStatus.RUNNING)
    variables, secret_keys = variables_from_json(row["variables"], keyring)
    return StepStart(
        execution=execution,
        marked=row["marked"],
        raced=row["raced"],
        version=row["version"],
        states=states,
        outputs=outputs,
        variables=variables,
        secret_keys=secret_keys,
    )


async def record_attempt_error(
    connection: Connection,
    execution_id: uuid.UUID,
    step_key: str,
    *,
    error: str,
    attempts: int,
    input_data: Any,
    started_at: dt.datetime,
    duration_ms: float,
) -> None:
    await sql.RECORD_ATTEMPT_ERROR.execute(
        connection, execution_id=execution_id, step_key=step_key, error=_text(error),
        attempts=attempts, input_data=json_text(input_data), started_at=started_at,
        duration_ms=duration_ms,
    )  # fmt: skip


# --- Completing a step ---------------------------------------------------------------------


def result_args(step_key: str, result: StepResult) -> dict[str, Any]:
    """The `:step_key` and `:result_*` parameters of a recorded result."""
    return {
        "step_key": step_key,
        "result_status": result.status.value,
        "result_input": json_text(result.input_data),
        "result_output": json_text(result.result_data),
        "result_error": _text(result.error),
        "result_attempts": result.attempts,
        "result_duration_ms": result.execution_time_ms,
        "result_branches": sorted(result.branches),
    }


def plan_args(planned: Sequence[PlannedStep], status: ExecutionStatus) -> dict[str, Any]:
    """The `:planned_*` and `:status` parameters of what a completion plans."""
    return {
        "planned_ids": [step.step_id for step in planned],
        "planned_keys": [step.key for step in planned],
        "planned_statuses": [step.status.value for step in planned],
        "status": status.value,
    }


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """The execution as `lock_and_record` found it, under its lock."""

    status: ExecutionStatus
    steps_run: int


async def lock_and_record(
    connection: Connection, execution_id: uuid.UUID, step_key: str, result: StepResult
) -> Recorded | None:
    """Take the execution's row lock, then record the step's result; None: no execution."""
    row = await sql.LOCK_AND_RECORD.fetchrow(
        connection, execution_id=execution_id, **result_args(step_key, result)
    )
    if row is None:
        return None
    return Recorded(status=ExecutionStatus(row["status"]), steps_run=row["steps_run"])


class Advanced(msgspec.Struct, frozen=True, kw_only=True):
    version: str | None  # the execution's version after this transaction's writes
    inserted: frozenset[str]  # the planned steps inserted (one planned already is not)


async def advance(
    connection: Connection,
    execution_id: uuid.UUID,
    planned: Sequence[PlannedStep],
    status: ExecutionStatus,
) -> Advanced:
    """Insert the planned steps and set the execution's status (one more step run)."""
    row = await sql.ADVANCE.fetchrow(
        connection, execution_id=execution_id, **plan_args(planned, status)
    )
    if row is None:  # the statement always returns one row
        raise RuntimeError("ADVANCE returned no row")
    return Advanced(version=row["version"], inserted=frozenset(row["inserted"]))


class Settled(msgspec.Struct, frozen=True, kw_only=True):
    done: bool  # False: nothing was written (take the long way), or the lease is lost
    lease_held: bool
    version: str | None = None


async def settle_step(
    connection: Connection,
    execution_id: uuid.UUID,
    *,
    version: str,
    step_key: str,
    result: StepResult,
    planned: Sequence[PlannedStep],
    status: ExecutionStatus,
    lease: Lease,
    continue_as: NewJob | None,
    enqueue: Sequence[NewJob],
) -> Settled:
    """SETTLE_STEP: the whole completion in one statement, if the execution is still at
    `version` (see the statement's comment)."""
    row = await sql.SETTLE_STEP.fetchrow(
        connection,
        execution_id=execution_id,
        version=version,
        **result_args(step_key, result),
        **plan_args(planned, status),
        **settle_job_args(lease, continue_as),
        **job_arrays(enqueue),
    )
    if row is None or row["version"] is None:
        return Settled(done=False, lease_held=row is not None and row["held"])
    return Settled(done=row["settled"] == 1, lease_held=True, version=row["version"])


# --- Operators -----------------------------------------------------------------------------


async def plan_steps(
    connection: Connection, execution_id: uuid.UUID, planned: Sequence[PlannedStep]
) -> frozenset[str]:
    """Record planned steps PENDING (a retry); returns the keys inserted (not planned yet)."""
    rows = await sql.PLAN_STEPS.fetch(
        connection,
        execution_id=execution_id,
        planned_ids=[step.step_id for step in planned],
        planned_keys=[step.key for step in planned],
    )
    return frozenset(row["step_key"] for row in rows)


async def set_execution_status(
    connection: Connection,
    execution_id: uuid.UUID,
    status: ExecutionStatus,
    *,
    error: str | None = None,
    steps_run: int = 0,
) -> None:
    await sql.SET_EXECUTION_STATUS.execute(
        connection, execution_id=execution_id, status=status.value, error=_text(error),
        steps_run=steps_run,
    )  # fmt: skip


async def cancel_active_steps(connection: Connection, execution_id: uuid.UUID) -> None:
    await sql.CANCEL_ACTIVE_STEPS.execute(connection, execution_id=execution_id)


async def cancel_children(
    connection: Connection, execution_id: uuid.UUID, *, step_run: uuid.UUID | None, reason: str
) -> int:
    """Cancel the execution's unfinished descendants (of one step run, or all) with their
    pending work; returns how many executions were cancelled."""
    rows = await sql.CANCEL_CHILDREN.fetch(
        connection, execution_id=execution_id, step_run=step_run, reason=_text(reason)
    )
    if rows:
        await sql.CANCEL_CHILD_WORK.execute(connection, execution_ids=[row["id"] for row in rows])
    return len(rows)
