"""The execution engine's runtime SQL: executions and step executions, on a given connection.

These statements run on the worker's hot path (see `server.worker.steps`), so they are raw
asyncpg with `$n` parameters, in one place, each doing as much as one round trip can. Every
function takes the connection first and never acquires one: the caller's transaction decides
what commits together.

A step's life in statements: `start_step` marks it running and reads everything it needs (the
execution, every step's state and output, the variables) as of one version of the execution.
Its completion is then, usually, one statement: `settle_step` records the result, the steps
planned next and the execution's status, settles the job and enqueues the other successors,
provided the execution is still at that version (nothing else finished or was planned
meanwhile). Otherwise it takes the long way, in one transaction: `lock_and_record` (the
execution's row lock, then the result), `step_states` (read after the lock, so it sees every
completion that committed before it) and `advance`.

The execution's row lock is the serialization point of one execution: every completion takes
it first, so two steps finishing at the same moment plan their successors one after the other
and a join is planned exactly once. It is `FOR NO KEY UPDATE`, the lock an UPDATE of the row
takes, so the foreign-key checks of inserted step rows and tasks do not wait for it. Locks are
always taken execution first, then step rows, then the job, so no two of these transactions
wait for each other in a cycle.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from typing import Any, Final

import msgspec

from server.crypto.aead import Keyring
from server.db.variables import VARIABLES_JSON, variables_from_json
from server.engine.document import Edge, Step, StepKind
from server.engine.planning import Graph, StepState, StepStatus
from server.queue.client import Connection, job_arrays, payload_text
from server.queue.jobs import Lease, NewJob
from server.queue.sql import enqueue_jobs_ctes, settle_job_ctes


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
FOR NO KEY UPDATE OF e
"""

GET_EXECUTION: Final = LOCK_EXECUTION.replace("FOR NO KEY UPDATE OF e", "")

# ON CONFLICT: a step is planned once per execution, whichever completion gets there first.
INSERT_STEP: Final = """
INSERT INTO step_execution (id, execution_id, step_id, step_key, status, created_at, branches)
VALUES (gen_random_uuid(), $1, $2, $3, $4, clock_timestamp(), '{}')
ON CONFLICT (execution_id, step_id) DO NOTHING
RETURNING id
"""

# Outputs are returned only for succeeded steps whose key is not in $2 (already known).
STEP_STATES: Final = """
SELECT step_key, status, branches,
       CASE WHEN status = 'SUCCESS' AND NOT step_key = ANY($2::text[])
            THEN result_data::text END AS result_data
FROM step_execution WHERE execution_id = $1
"""

_FINISHED_SQL: Final = "('SUCCESS', 'FAILED', 'CANCELLED')"

# An execution's version is its row's `xmin`: every change that matters to planning (a step
# finishing or being planned, a cancel, a retry) updates the execution row in the same
# transaction, so an unchanged xmin means unchanged step states. A job that knows the states
# as of a version can plan without reading them again (SETTLE_STEP).

# Every step's state (key, status, branches, output when it succeeded), as one JSON array.
_STEPS_JSON: Final = """(
    SELECT coalesce(json_agg(json_build_array(s.step_key, s.status, s.branches,
                        CASE WHEN s.status = 'SUCCESS' THEN s.result_data END)), '[]')::text
    FROM step_execution s WHERE s.execution_id = $1
)"""

# A step's start in one round trip. `execution_marked` turns a PENDING or WAITING execution
# RUNNING (and touches it when a delay resumes, $4, since its step leaves WAITING): only the
# version this statement read, so a change that commits meanwhile makes it match nothing and
# `raced` tells the caller to start again. `step_marked` turns the step RUNNING, counting the
# attempt, unless it was decided meanwhile or its execution is over; it reads
# `execution_marked` so that the execution's lock comes first (lock order: execution, then
# steps). The SELECT reads the execution, its version, every step's state and output, and the
# workflow's variables, all as of this statement's snapshot.
START_STEP: Final = f"""
WITH seen AS (
    SELECT xmin::text AS version FROM workflow_execution WHERE id = $1
),
execution_marked AS (
    UPDATE workflow_execution
    SET status = CASE WHEN status IN ('PENDING', 'WAITING') THEN 'RUNNING' ELSE status END,
        started_at = coalesce(started_at, now()), updated_at = now()
    WHERE id = $1 AND xmin::text = (SELECT version FROM seen)
      AND (status IN ('PENDING', 'WAITING') OR ($4 AND status NOT IN {_FINISHED_SQL}))
    RETURNING xmin::text AS version
),
step_marked AS (
    UPDATE step_execution
    SET status = 'RUNNING', attempts = $3, started_at = coalesce(started_at, now())
    WHERE execution_id = $1 AND step_key = $2 AND status IN ('PENDING', 'RUNNING', 'WAITING')
      AND (SELECT count(*) FROM execution_marked) >= 0
      AND EXISTS (SELECT 1 FROM workflow_execution
                  WHERE id = $1 AND status NOT IN {_FINISHED_SQL})
    RETURNING id
)
SELECT e.id, e.workflow_id, e.version_id, v.version_num, e.status, e.context_data::text,
       e.steps_run, e.created_at, e.started_at,
       EXISTS (SELECT 1 FROM step_marked) AS marked,
       coalesce((SELECT version FROM execution_marked), e.xmin::text) AS version,
       (e.status IN ('PENDING', 'WAITING') OR ($4 AND e.status NOT IN {_FINISHED_SQL}))
           AND NOT EXISTS (SELECT 1 FROM execution_marked) AS raced,
       {_STEPS_JSON} AS steps,
       {VARIABLES_JSON.format(workflow_id="e.workflow_id")} AS variables
FROM workflow_execution e JOIN workflow_version v ON v.id = e.version_id
WHERE e.id = $1
"""  # noqa: S608 - only constant SQL is interpolated


def _attempt_entry(status: str, error: str, attempts: str, started: str, duration: str) -> str:
    """A JSON array of one `attempts_history` entry, from SQL expressions."""
    return f"""jsonb_build_array(jsonb_build_object(
            'attempt', {attempts}::int, 'status', {status}::text, 'error', {error}::text,
            'started_at', {started}::timestamptz, 'finished_at', clock_timestamp(),
            'duration_ms', {duration}::float8))"""


def _record_cte(first: int, only_if: str) -> str:
    """CTE `recorded`: the step's result (its last attempt: the attempts before it are in
    `attempts_history`). Parameters from `$first`: step key, status, input, output, error,
    attempts, execution time, branches (`StepResult`, `_result_arguments`)."""
    key, status, input_data, output, error, attempts, duration, branches = (
        f"${first + offset}" for offset in range(8)
    )
    return f"""recorded AS (
    UPDATE step_execution
    SET status = {status}::text, input_data = {input_data}::jsonb, result_data = {output}::jsonb,
        error = {error}, attempts = {attempts}, execution_time = {duration}, branches = {branches},
        finished_at = CASE WHEN {status}::text IN ('WAITING', 'RUNNING') THEN NULL ELSE now() END
    WHERE execution_id = $1 AND step_key = {key} AND {only_if}
    RETURNING id
)"""  # noqa: S608 - parameter numbers and constant SQL only


def _advance_ctes(first: int, only_if: str) -> str:
    """CTEs `planned` (the steps planned next: SKIPPED, PENDING for their own jobs, or RUNNING
    when this job runs it next; one planned already is left alone) and `execution` (its status
    and one more step run; returns the new version). Parameters from `$first`: step ids,
    keys, statuses (arrays), the execution's status."""
    ids, keys, statuses, status = (f"${first + offset}" for offset in range(4))
    return f"""planned AS (
    INSERT INTO step_execution
        (id, execution_id, step_id, step_key, status, attempts, created_at, started_at, branches)
    SELECT gen_random_uuid(), $1, new.step_id, new.step_key, new.status,
           CASE WHEN new.status = 'RUNNING' THEN 1 ELSE 0 END, clock_timestamp(),
           CASE WHEN new.status = 'RUNNING' THEN clock_timestamp() END, '{{}}'
    FROM unnest({ids}::uuid[], {keys}::text[], {statuses}::text[])
         AS new (step_id, step_key, status)
    WHERE {only_if}
    ON CONFLICT (execution_id, step_id) DO NOTHING
    RETURNING step_key
),
execution AS (
    UPDATE workflow_execution
    SET status = {status}::text, steps_run = steps_run + 1, updated_at = now(),
        finished_at = CASE WHEN {status}::text IN {_FINISHED_SQL} THEN now() END
    WHERE id = $1 AND {only_if}
    RETURNING xmin::text AS version
)"""  # noqa: S608 - parameter numbers and constant SQL only


# The first statement of a completion: the execution's row lock, then the step's result (its
# condition reads `locked`, so the lock comes first). No row: the execution is gone.
LOCK_AND_RECORD: Final = f"""
WITH locked AS (
    SELECT id, status, steps_run FROM workflow_execution WHERE id = $1 FOR NO KEY UPDATE
),
{_record_cte(2, "EXISTS (SELECT 1 FROM locked)")}
SELECT status, steps_run, (SELECT count(*) FROM recorded) AS recorded FROM locked
"""  # noqa: S608 - built from constants

# The completion's writes once planned (after LOCK_AND_RECORD and STEP_STATES): the steps
# planned next and the execution's status. Returns the keys inserted and the new version.
ADVANCE: Final = f"""
WITH {_advance_ctes(2, "true")}
SELECT (SELECT version FROM execution) AS version,
       (SELECT coalesce(array_agg(step_key), '{{}}') FROM planned) AS inserted
"""  # noqa: S608 - built from constants

_HELD_JOB, _SETTLE_JOB = settle_job_ctes(15, after="locked", only_if="EXISTS (SELECT 1 FROM ok)")

# A whole completion in one statement, when the job knows the step states as of version $2 and
# planned from them: lock the execution (then the job, fenced by its lease), and only if the
# version is still $2, the execution unfinished and the lease ours (`ok`), record the result
# ($3..$10), insert the planned steps ($11..$13), set the status ($14), settle the job
# ($15..$19: complete it, or hand it on to the step it runs next) and enqueue the other
# planned steps' jobs (arrays from $20). Otherwise it writes nothing and the caller takes the
# long way (LOCK_AND_RECORD, STEP_STATES, ADVANCE in one transaction). Run alone it is its own
# transaction; a transactional action runs it in the action's transaction.
SETTLE_STEP: Final = f"""
WITH locked AS (
    SELECT status, xmin::text AS version FROM workflow_execution WHERE id = $1
    FOR NO KEY UPDATE
),
{_HELD_JOB},
ok AS MATERIALIZED (
    SELECT 1 FROM locked
    WHERE version = $2 AND status NOT IN {_FINISHED_SQL} AND EXISTS (SELECT 1 FROM held_job)
),
{_record_cte(3, "EXISTS (SELECT 1 FROM ok)")},
{_advance_ctes(11, "EXISTS (SELECT 1 FROM ok)")},
{_SETTLE_JOB},
{enqueue_jobs_ctes(20, only_if="EXISTS (SELECT 1 FROM ok)")}
SELECT (SELECT version FROM execution) AS version,
       EXISTS (SELECT 1 FROM held_job) AS held,
       (SELECT count(*) FROM completed_job) + (SELECT count(*) FROM continued_job) AS settled,
       (SELECT count(*) FROM enqueued_wake) AS woken
"""  # noqa: S608 - built from constants

# A failed attempt that will be retried: its error, and its entry appended to the step's
# history ($6 its start, $7 its duration in milliseconds). Only retried attempts are appended:
# the last attempt is the step row's own columns (`attempts`, `status`, `error`,
# `execution_time`, `finished_at`), so a step that succeeds at once writes no history at all.
RECORD_ATTEMPT_ERROR: Final = f"""
UPDATE step_execution SET error = $3, attempts = $4, input_data = coalesce($5::jsonb, input_data),
    attempts_history = attempts_history || {_attempt_entry("'FAILED'", "$3", "$4", "$6", "$7")}
WHERE execution_id = $1 AND step_key = $2 AND status = 'RUNNING'
"""  # noqa: S608 - constant SQL only

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


def _json(value: Any) -> str | None:
    """`value` as JSON text PostgreSQL's jsonb accepts: a NUL character (which a template can
    produce and jsonb refuses) is stored as U+FFFD, so a step's record is never refused."""
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
    connection: Connection, execution_id: uuid.UUID, known: Collection[str] = ()
) -> tuple[dict[str, StepState], dict[str, Any]]:
    """Each recorded step's state, and the outputs of the steps that succeeded (but for those
    in `known`, which the caller has)."""
    states: dict[str, StepState] = {}
    outputs: dict[str, Any] = {}
    for row in await connection.fetch(STEP_STATES, execution_id, list(known)):
        status = StepStatus(row["status"])
        states[row["step_key"]] = StepState(status=status, branches=frozenset(row["branches"]))
        if row["result_data"] is not None:
            outputs[row["step_key"]] = msgspec.json.decode(row["result_data"])
    return states, outputs


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
    row = await connection.fetchrow(START_STEP, execution_id, step_key, attempt, resume)
    execution = _execution(row)
    if row is None or execution is None:
        return None
    states, outputs = _steps(row["steps"])
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


def _steps(text: str) -> tuple[dict[str, StepState], dict[str, Any]]:
    states: dict[str, StepState] = {}
    outputs: dict[str, Any] = {}
    for key, status, branches, output in msgspec.json.decode(text):
        states[key] = StepState(status=StepStatus(status), branches=frozenset(branches))
        if output is not None:
            outputs[key] = output
    return states, outputs


def _result_arguments(step_key: str, result: StepResult) -> list[Any]:
    """The parameters of `_record_cte`, in order."""
    return [
        step_key, result.status.value, _json(result.input_data), _json(result.result_data),
        _text(result.error), result.attempts, result.execution_time_ms, sorted(result.branches),
    ]  # fmt: skip


def _planned_arguments(planned: Sequence[PlannedStep], status: str) -> list[Any]:
    """The parameters of `_advance_ctes`, in order."""
    return [
        [step.step_id for step in planned],
        [step.key for step in planned],
        [step.status.value for step in planned],
        status,
    ]


class PlannedStep(msgspec.Struct, frozen=True, kw_only=True):
    step_id: uuid.UUID
    key: str
    status: StepStatus


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """The execution as `lock_and_record` found it, under its lock."""

    status: str
    steps_run: int


async def lock_and_record(
    connection: Connection, execution_id: uuid.UUID, step_key: str, result: StepResult
) -> Recorded | None:
    """Take the execution's row lock, then record the step's result; None: no execution."""
    row = await connection.fetchrow(
        LOCK_AND_RECORD, execution_id, *_result_arguments(step_key, result)
    )
    if row is None:
        return None
    return Recorded(status=row["status"], steps_run=row["steps_run"])


class Advanced(msgspec.Struct, frozen=True, kw_only=True):
    version: str | None  # the execution's version after this transaction's writes
    inserted: frozenset[str]  # the planned steps inserted (one planned already is not)


async def advance(
    connection: Connection,
    execution_id: uuid.UUID,
    planned: Sequence[PlannedStep],
    status: str,
) -> Advanced:
    """Insert the planned steps and set the execution's status (one more step run)."""
    row = await connection.fetchrow(ADVANCE, execution_id, *_planned_arguments(planned, status))
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
    status: str,
    lease: Lease,
    continue_as: NewJob | None,
    enqueue: Sequence[NewJob],
) -> Settled:
    """SETTLE_STEP: the whole completion in one statement, if the execution is still at
    `version` (see the statement's comment)."""
    row = await connection.fetchrow(
        SETTLE_STEP,
        execution_id,
        version,
        *_result_arguments(step_key, result),
        *_planned_arguments(planned, status),
        lease.job_id,
        lease.lease_token,
        None if continue_as is None else payload_text(continue_as.payload),
        None if continue_as is None else continue_as.max_attempts,
        None if continue_as is None else continue_as.unique_key,
        *job_arrays(enqueue),
    )
    if row is None or row["version"] is None:
        return Settled(done=False, lease_held=row is not None and row["held"])
    return Settled(
        done=row["settled"] == 1,
        lease_held=True,
        version=row["version"],
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
    await connection.execute(
        RECORD_ATTEMPT_ERROR, execution_id, step_key, _text(error), attempts, _json(input_data),
        started_at, duration_ms,
    )  # fmt: skip


async def set_execution_status(
    connection: Connection,
    execution_id: uuid.UUID,
    status: str,
    *,
    error: str | None = None,
    steps_run: int = 0,
) -> None:
    await connection.execute(SET_EXECUTION_STATUS, execution_id, status, _text(error), steps_run)


async def cancel_active_steps(connection: Connection, execution_id: uuid.UUID) -> None:
    await connection.execute(CANCEL_ACTIVE_STEPS, execution_id)


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
