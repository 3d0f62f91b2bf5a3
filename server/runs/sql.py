"""Every SQL statement of the workflow runtime, in one place, with what it locks and why.

Parameters are named (`server.statements`): `:execution_id` means the same value everywhere in
a statement, and fragments shared with the queue (`server.queue.sql.enqueue_jobs_ctes`,
`settle_job_ctes`) bring their own names, so no statement depends on another's parameter
positions. `server.runs.store` runs these and returns structs.

A step's life in statements: START_STEP marks it running and reads everything it needs (the
execution, every step's state and output, the variables) as of one version of the execution.
Its completion is then, usually, one statement: SETTLE_STEP records the result, the steps
planned next and the execution's status, settles the job and enqueues the other successors,
provided the execution is still at that version (nothing else finished or was planned
meanwhile). Otherwise it takes the long way, in one transaction: LOCK_AND_RECORD (the
execution's row lock, then the result), STEP_STATES (read after the lock, so it sees every
completion that committed before it) and ADVANCE.

An execution's version is its row's `xmin`: every change that matters to planning (a step
finishing or being planned, a cancel, a retry) updates the execution row in the same
transaction, so an unchanged xmin means unchanged step states.

Locks: the execution's row lock is the serialization point of one execution: every completion,
cancel and retry takes it first, so two steps finishing at the same moment plan their
successors one after the other and a join is planned exactly once. It is `FOR NO KEY UPDATE`,
the lock an UPDATE of the row takes, so the foreign-key checks of inserted step rows and tasks
do not wait for it. Locks are always taken execution first, then step rows, then the job, so
no two of these transactions wait for each other in a cycle.

Executions start in one place: START_EXECUTIONS (after a new event, RECORD_EVENT; after an event
a database trigger recorded, FAN_OUT_RECORDED_EVENT) writes the event, its executions, their
entry steps and those steps' jobs in one statement. Every trigger and manual runs come this way.
"""

from __future__ import annotations

from typing import Final

from server.db.execution_outcomes import FINAL_OUTPUTS
from server.db.variables import VARIABLES_JSON
from server.engine.planning import FINISHED_EXECUTION_SQL as FINISHED
from server.queue.sql import enqueue_jobs_ctes, settle_job_ctes
from server.statements import Statement

# --- Reading an execution ------------------------------------------------------------------

_EXECUTION_COLUMNS: Final = """e.id, e.workflow_id, e.version_id, v.version_num, e.status,
       e.context_data::text, e.steps_run, e.created_at, e.started_at, e.traceparent"""

# The row lock every completion, cancel and retry takes first; see the module docstring.
LOCK_EXECUTION: Final = Statement(f"""
SELECT {_EXECUTION_COLUMNS}
FROM workflow_execution e JOIN workflow_version v ON v.id = e.version_id
WHERE e.id = :execution_id
FOR NO KEY UPDATE OF e
""")  # noqa: S608 - constant SQL only

GET_EXECUTION: Final = Statement(f"""
SELECT {_EXECUTION_COLUMNS}
FROM workflow_execution e JOIN workflow_version v ON v.id = e.version_id
WHERE e.id = :execution_id
""")  # noqa: S608 - constant SQL only

# Every recorded step's state; outputs only for succeeded steps the caller does not know yet.
STEP_STATES: Final = Statement("""
SELECT step_key, status, branches,
       CASE WHEN status = 'SUCCESS' AND NOT step_key = ANY(:known_keys::text[])
            THEN result_data::text END AS result_data
FROM step_execution WHERE execution_id = :execution_id
""")

# A published version's steps and edges (callers cache the graph: versions are frozen).
GRAPH_STEPS: Final = Statement("""
SELECT id, step_key, name, kind, action_key, cfg::text AS cfg
FROM workflow_step WHERE version_id = :version_id ORDER BY position, step_key
""")
GRAPH_EDGES: Final = Statement("""
SELECT f.step_key AS source, t.step_key AS target, e.branch_key
FROM workflow_edge e
JOIN workflow_step f ON f.id = e.from_step_id
JOIN workflow_step t ON t.id = e.to_step_id
WHERE e.version_id = :version_id
""")

# The name a failure is logged with; read only when something failed (never on the hot path).
WORKFLOW_NAME: Final = Statement("SELECT name FROM workflow_definition WHERE id = :workflow_id")
EXECUTION_WORKFLOW: Final = Statement("""
SELECT d.id AS workflow_id, d.name
FROM workflow_execution e JOIN workflow_definition d ON d.id = e.workflow_id
WHERE e.id = :execution_id
""")

# --- Starting executions -------------------------------------------------------------------

# A workflow's latest published version, for a LATERAL join on `d` (workflow_definition).
_LATEST_PUBLISHED: Final = """LATERAL (
        SELECT id, options FROM workflow_version
        WHERE workflow_id = d.id AND status = 'published'
        ORDER BY version_num DESC LIMIT 1
    ) v ON true"""

# Routes as one JSON array: per active subscription (or the one workflow of a manual run), the
# workflow, its filter, its latest published version and that version's entry step (the one
# step without incoming edges; a published graph has exactly one), and the version's
# `concurrency` option (null without one). `{where}` picks the subscriptions. No locks.
_ROUTES_JSON: Final = """(
    SELECT coalesce(json_agg(json_build_array(d.id, s.filter_conditions, v.id, st.id,
                                              st.step_key, st.kind, st.action_key, st.cfg,
                                              v.options->'concurrency')
                             ORDER BY s.created_at, s.id), '[]')::text
    FROM workflow_subscription s
    JOIN workflow_definition d ON d.id = s.workflow_id AND d.is_active
    JOIN {latest}
    JOIN workflow_step st ON st.version_id = v.id
         AND NOT EXISTS (SELECT 1 FROM workflow_edge e WHERE e.to_step_id = st.id)
    WHERE s.trigger_key = {trigger_key} AND s.is_active
)"""


def routes_json(trigger_key: str) -> str:
    """Where an event of a trigger key goes, as a scalar subquery (`trigger_key`: the SQL
    naming the key; the webhook intake reads it together with its endpoint)."""
    return _ROUTES_JSON.format(latest=_LATEST_PUBLISHED, trigger_key=trigger_key)


ROUTES: Final = Statement(f"SELECT {routes_json(':trigger_key')}")

# A manual run's one route: the workflow's latest published version and entry step, in the
# shape of the routes (no filter), with whether the workflow exists and is active.
WORKFLOW_ROUTE: Final = Statement(f"""
SELECT d.is_active,
       json_build_array(json_build_array(d.id, NULL, v.id, st.id, st.step_key, st.kind,
                                         st.action_key, st.cfg,
                                         v.options->'concurrency'))::text AS routes
FROM workflow_definition d
JOIN {_LATEST_PUBLISHED}
JOIN workflow_step st ON st.version_id = v.id
     AND NOT EXISTS (SELECT 1 FROM workflow_edge e WHERE e.to_step_id = st.id)
WHERE d.id = :workflow_id
""")  # noqa: S608 - constant SQL only


def _start_executions(event: str, *, grouped: bool = False) -> str:
    """The fan-out writes after the CTE `event` (one row: id, payload, trigger_type; or none,
    and then nothing is written): the executions (`:execution_ids`, `:workflow_ids`,
    `:version_ids`; `:traceparent`, the intake span's, NULL when tracing is off), their entry steps (`:entry_step_ids`, `:entry_step_keys`) and those
    steps' jobs (the queue's `:job_*` arrays). `grouped`: some executions count in concurrency
    or overlap groups (`server.runs.concurrency`): `:held` (held ones get no entry step; the
    caller passes jobs only for the others), `:concurrency_keys` and `:overlap_keys`; the
    plain form, for events of workflows without groups, carries none of these arrays."""
    columns = values = arrays = names = entry_arrays = entry_names = entry_filter = ""
    if grouped:
        columns = ", held, concurrency_key, overlap_key"
        values = ", new.held, new.concurrency_key, new.overlap_key"
        arrays = ", :held::bool[], :concurrency_keys::text[], :overlap_keys::text[]"
        names = ", held, concurrency_key, overlap_key"
        entry_arrays, entry_names, entry_filter = ", :held::bool[]", ", held", "WHERE NOT new.held"
    return f"""
WITH event AS ({event}),
executions AS (
    INSERT INTO workflow_execution
        (id, workflow_id, version_id, status, context_data, trigger_event_id, trigger_type,
         traceparent {columns})
    SELECT new.id, new.workflow_id, new.version_id, 'PENDING',
           jsonb_build_object('trigger', event.payload), event.id, event.trigger_type,
           :traceparent::text {values}
    FROM event CROSS JOIN unnest(:execution_ids::uuid[], :workflow_ids::uuid[],
                                 :version_ids::uuid[] {arrays})
                          AS new (id, workflow_id, version_id {names})
),
entry_steps AS (
    INSERT INTO step_execution (id, execution_id, step_id, step_key, status, created_at, branches)
    SELECT gen_random_uuid(), new.execution_id, new.step_id, new.step_key, 'PENDING',
           clock_timestamp(), '{{}}'
    FROM event CROSS JOIN unnest(:execution_ids::uuid[], :entry_step_ids::uuid[],
                                 :entry_step_keys::text[] {entry_arrays})
                          AS new (execution_id, step_id, step_key {entry_names})
    {entry_filter}
),
{enqueue_jobs_ctes(only_if="EXISTS (SELECT 1 FROM event)")}
SELECT (SELECT id FROM event) AS event_id, (SELECT count(*) FROM enqueued_wake) AS woken
"""  # noqa: S608 - built from constants


# A new event and what it starts; nothing on a repeated (trigger_key, idempotency_key): NULL
# keys never conflict. The unique index makes a racing duplicate wait for the first insert,
# then insert nothing (and every other insert of the statement depends on the event's).
_RECORD_EVENT: Final = """
    INSERT INTO trigger_event
        (id, trigger_key, trigger_type, payload, idempotency_key, source, outcome, outcome_detail,
         correlation_key)
    VALUES (:event_id, :trigger_key, :trigger_type, :payload::jsonb, :idempotency_key,
            :source::jsonb, :outcome, :outcome_detail, :correlation_key)
    ON CONFLICT (trigger_key, idempotency_key) DO NOTHING
    RETURNING id, payload, trigger_type
"""
RECORD_EVENT: Final = Statement(_start_executions(_RECORD_EVENT))
RECORD_EVENT_GROUPED: Final = Statement(_start_executions(_RECORD_EVENT, grouped=True))

# An event a database trigger recorded (outcome `pending`), fanned out once. The row lock makes
# a concurrent fan-out of the same event wait, then find it no longer pending and write nothing.
_FAN_OUT_RECORDED_EVENT: Final = """
    UPDATE trigger_event SET outcome = :outcome, outcome_detail = :outcome_detail
    WHERE id = :event_id AND outcome = 'pending'
    RETURNING id, payload, trigger_type
"""
FAN_OUT_RECORDED_EVENT: Final = Statement(_start_executions(_FAN_OUT_RECORDED_EVENT))
FAN_OUT_RECORDED_EVENT_GROUPED: Final = Statement(
    _start_executions(_FAN_OUT_RECORDED_EVENT, grouped=True)
)

PENDING_EVENT: Final = Statement("""
SELECT trigger_key, payload::text AS payload
FROM trigger_event WHERE id = :event_id AND outcome = 'pending'
""")

FIRST_EVENT: Final = Statement("""
SELECT ev.id, coalesce(array_agg(ex.id ORDER BY ex.created_at, ex.id)
                       FILTER (WHERE ex.id IS NOT NULL), '{}') AS execution_ids
FROM trigger_event ev LEFT JOIN workflow_execution ex ON ex.trigger_event_id = ev.id
WHERE ev.trigger_key = :trigger_key AND ev.idempotency_key = :idempotency_key
GROUP BY ev.id
""")

# --- Running a step ------------------------------------------------------------------------

# Every step's state (key, status, branches, output when it succeeded), as one JSON array.
_STEPS_JSON: Final = """(
    SELECT coalesce(json_agg(json_build_array(s.step_key, s.status, s.branches,
                        CASE WHEN s.status = 'SUCCESS' THEN s.result_data END)), '[]')::text
    FROM step_execution s WHERE s.execution_id = :execution_id
)"""

# A step's start in one round trip. `execution_marked` turns a PENDING or WAITING execution
# RUNNING (and touches it when a delay resumes, `:resume`, since its step leaves WAITING): only
# the version this statement read, so a change that commits meanwhile makes it match nothing
# and `raced` tells the caller to start again. `step_marked` turns the step RUNNING, counting
# the attempt, unless it was decided meanwhile or its execution is over; it reads
# `execution_marked` so that the execution's lock comes first (lock order: execution, then
# steps). The SELECT reads the execution, its version, every step's state and output, and the
# workflow's variables, all as of this statement's snapshot.
START_STEP: Final = Statement(f"""
WITH seen AS (
    SELECT xmin::text AS version FROM workflow_execution WHERE id = :execution_id
),
execution_marked AS (
    UPDATE workflow_execution
    SET status = CASE WHEN status IN ('PENDING', 'WAITING') THEN 'RUNNING' ELSE status END,
        started_at = coalesce(started_at, now()), updated_at = now()
    WHERE id = :execution_id AND xmin::text = (SELECT version FROM seen)
      AND (status IN ('PENDING', 'WAITING') OR (:resume AND status NOT IN {FINISHED}))
    RETURNING xmin::text AS version
),
step_marked AS (
    UPDATE step_execution
    SET status = 'RUNNING', attempts = :attempt, started_at = coalesce(started_at, now())
    WHERE execution_id = :execution_id AND step_key = :step_key
      AND status IN ('PENDING', 'RUNNING', 'WAITING')
      AND (SELECT count(*) FROM execution_marked) >= 0  -- runs after execution_marked
      AND EXISTS (SELECT 1 FROM workflow_execution
                  WHERE id = :execution_id AND status NOT IN {FINISHED})
    RETURNING id
)
SELECT {_EXECUTION_COLUMNS},
       EXISTS (SELECT 1 FROM step_marked) AS marked,
       coalesce((SELECT version FROM execution_marked), e.xmin::text) AS version,
       (e.status IN ('PENDING', 'WAITING') OR (:resume AND e.status NOT IN {FINISHED}))
           AND NOT EXISTS (SELECT 1 FROM execution_marked) AS raced,
       {_STEPS_JSON} AS steps,
       {VARIABLES_JSON.format(workflow_id="e.workflow_id")} AS variables
FROM workflow_execution e JOIN workflow_version v ON v.id = e.version_id
WHERE e.id = :execution_id
""")  # noqa: S608 - only constant SQL is interpolated

# A failed attempt that will be retried: its error, and its entry appended to the step's
# history. Only retried attempts are appended: the last attempt is the step row's own columns
# (`attempts`, `status`, `error`, `execution_time`, `finished_at`), so a step that succeeds at
# once writes no history at all.
RECORD_ATTEMPT_ERROR: Final = Statement("""
UPDATE step_execution
SET error = :error, attempts = :attempts, input_data = coalesce(:input_data::jsonb, input_data),
    attempts_history = attempts_history || jsonb_build_array(jsonb_build_object(
        'attempt', :attempts::int, 'status', 'FAILED', 'error', :error::text,
        'started_at', :started_at::timestamptz, 'finished_at', clock_timestamp(),
        'duration_ms', :duration_ms::float8))
WHERE execution_id = :execution_id AND step_key = :step_key AND status = 'RUNNING'
""")

# --- Completing a step ---------------------------------------------------------------------


def _recorded(only_if: str) -> str:
    """CTE `recorded`: the step's result (its last attempt: the attempts before it are in
    `attempts_history`), from the `:result_*` parameters (`store.result_args`)."""
    return f"""recorded AS (
    UPDATE step_execution
    SET status = :result_status::text, input_data = :result_input::jsonb,
        result_data = :result_output::jsonb, error = :result_error,
        attempts = :result_attempts, execution_time = :result_duration_ms,
        branches = :result_branches,
        finished_at = CASE WHEN :result_status::text IN ('WAITING', 'RUNNING') THEN NULL
                           ELSE now() END
    WHERE execution_id = :execution_id AND step_key = :step_key AND {only_if}
    RETURNING id
)"""  # noqa: S608 - the caller's constant SQL only


def _advanced(only_if: str) -> str:
    """CTEs `planned` (the steps planned next: SKIPPED, PENDING for their own jobs, or RUNNING
    when this job runs it next; one planned already is left alone) and `execution` (its status
    and one more step run; returns the new version), from the `:planned_*` parameters and
    `:status` (`store.plan_args`)."""
    return f"""planned AS (
    INSERT INTO step_execution
        (id, execution_id, step_id, step_key, status, attempts, created_at, started_at, branches)
    SELECT gen_random_uuid(), :execution_id, new.step_id, new.step_key, new.status,
           CASE WHEN new.status = 'RUNNING' THEN 1 ELSE 0 END, clock_timestamp(),
           CASE WHEN new.status = 'RUNNING' THEN clock_timestamp() END, '{{}}'
    FROM unnest(:planned_ids::uuid[], :planned_keys::text[], :planned_statuses::text[])
         AS new (step_id, step_key, status)
    WHERE {only_if}
    ON CONFLICT (execution_id, step_id) DO NOTHING
    RETURNING step_key
),
execution AS (
    UPDATE workflow_execution
    SET status = :status::text, steps_run = steps_run + 1, updated_at = now(),
        finished_at = CASE WHEN :status::text IN {FINISHED} THEN now() END
    WHERE id = :execution_id AND {only_if}
    RETURNING xmin::text AS version
)"""  # noqa: S608 - the caller's constant SQL only


# The first statement of the long way: the execution's row lock, then the step's result (its
# condition reads `locked`, so the lock comes first). No row: the execution is gone.
LOCK_AND_RECORD: Final = Statement(f"""
WITH locked AS (
    SELECT id, status, steps_run FROM workflow_execution WHERE id = :execution_id
    FOR NO KEY UPDATE
),
{_recorded("EXISTS (SELECT 1 FROM locked)")}
SELECT status, steps_run, (SELECT count(*) FROM recorded) AS recorded FROM locked
""")  # noqa: S608 - built from constants

# The long way's writes once planned (after LOCK_AND_RECORD and STEP_STATES): the steps
# planned next and the execution's status. Returns the keys inserted and the new version.
ADVANCE: Final = Statement(f"""
WITH {_advanced("true")}
SELECT (SELECT version FROM execution) AS version,
       (SELECT coalesce(array_agg(step_key), '{{}}') FROM planned) AS inserted
""")  # noqa: S608 - built from constants

_HELD_JOB, _SETTLE_JOB = settle_job_ctes(after="locked", only_if="EXISTS (SELECT 1 FROM ok)")

# A whole completion in one statement, when the job knows the step states as of `:version` and
# planned from them: lock the execution (then the job, fenced by its lease), and only if the
# version is unchanged, the execution unfinished and the lease ours (`ok`), record the result,
# insert the planned steps, set the status, settle the job (complete it, or hand it on to the
# step it runs next) and enqueue the other planned steps' jobs. Otherwise it writes nothing and
# the caller takes the long way. Run alone it is its own transaction; a transactional action
# runs it in the action's transaction.
SETTLE_STEP: Final = Statement(f"""
WITH locked AS (
    SELECT status, xmin::text AS version FROM workflow_execution WHERE id = :execution_id
    FOR NO KEY UPDATE
),
{_HELD_JOB},
ok AS MATERIALIZED (
    SELECT 1 FROM locked
    WHERE version = :version AND status NOT IN {FINISHED}
      AND EXISTS (SELECT 1 FROM held_job)
),
{_recorded("EXISTS (SELECT 1 FROM ok)")},
{_advanced("EXISTS (SELECT 1 FROM ok)")},
{_SETTLE_JOB},
{enqueue_jobs_ctes(only_if="EXISTS (SELECT 1 FROM ok)")}
SELECT (SELECT version FROM execution) AS version,
       EXISTS (SELECT 1 FROM held_job) AS held,
       (SELECT count(*) FROM completed_job) + (SELECT count(*) FROM continued_job) AS settled,
       (SELECT count(*) FROM enqueued_wake) AS woken
""")  # noqa: S608 - built from constants

# --- Operators: planning again, cancelling, failing ----------------------------------------

# Steps planned outside a completion (a retry): inserted PENDING unless planned already;
# returns the keys inserted (their jobs are enqueued next, in the same transaction).
PLAN_STEPS: Final = Statement("""
INSERT INTO step_execution (id, execution_id, step_id, step_key, status, created_at, branches)
SELECT gen_random_uuid(), :execution_id, new.step_id, new.step_key, 'PENDING',
       clock_timestamp(), '{}'
FROM unnest(:planned_ids::uuid[], :planned_keys::text[]) AS new (step_id, step_key)
ON CONFLICT (execution_id, step_id) DO NOTHING
RETURNING step_key
""")

SET_EXECUTION_STATUS: Final = Statement(f"""
UPDATE workflow_execution
SET status = :status::text, error = :error, steps_run = steps_run + :steps_run,
    updated_at = now(), finished_at = CASE WHEN :status::text IN {FINISHED} THEN now() END,
    held = held AND :status::text NOT IN {FINISHED}
WHERE id = :execution_id
""")  # noqa: S608 - constant SQL only

CANCEL_ACTIVE_STEPS: Final = Statement("""
UPDATE step_execution SET status = 'CANCELLED', finished_at = now()
WHERE execution_id = :execution_id AND status IN ('PENDING', 'WAITING')
""")

# Retry forgets the steps that will be planned again (cancelled ones, and `:step_keys`; NULL:
# every step), returning their attempts (the retried ones, then the last: the row itself, as
# the API shows it) so the steps run again keep them. Locks: the execution's row is locked
# first by the caller, then these step rows.
FORGET_STEPS: Final = Statement("""
DELETE FROM step_execution
WHERE execution_id = :execution_id
  AND (:step_keys::text[] IS NULL OR status = 'CANCELLED' OR step_key = ANY(:step_keys))
RETURNING step_key, (attempts_history || CASE
    WHEN status IN ('SUCCESS', 'FAILED') AND finished_at IS NOT NULL AND attempts > 0
    THEN jsonb_build_array(jsonb_build_object(
        'attempt', attempts, 'status', status, 'error', error,
        'started_at', finished_at - coalesce(execution_time, 0) * interval '1 millisecond',
        'finished_at', finished_at, 'duration_ms', execution_time))
    ELSE '[]'::jsonb END)::text AS history
""")
RESTORE_HISTORIES: Final = Statement("""
UPDATE step_execution s SET attempts_history = old.history::jsonb || s.attempts_history
FROM unnest(:step_keys::text[], :histories::text[]) AS old (step_key, history)
WHERE s.execution_id = :execution_id AND s.step_key = old.step_key
""")
# A retry on another version: the execution and the steps it keeps (same keys) move to it.
MOVE_TO_VERSION: Final = Statement("""
WITH moved AS (
    UPDATE step_execution s SET step_id = ws.id
    FROM workflow_step ws
    WHERE s.execution_id = :execution_id AND ws.version_id = :version_id
      AND ws.step_key = s.step_key
)
UPDATE workflow_execution SET version_id = :version_id, updated_at = now()
WHERE id = :execution_id
""")
LATEST_PUBLISHED: Final = Statement("""
SELECT id FROM workflow_version WHERE workflow_id = :workflow_id AND status = 'published'
ORDER BY version_num DESC LIMIT 1
""")

# Step jobs that died outside their handler (the rescuer or a shutdown gave up on their last
# attempt, or the worker's job timeout cancelled them) while their execution still runs: without
# this sweep such an execution would wait forever for a step that will never report. Walks the
# queue's partial index of dead jobs; no locks (each execution is locked before it is failed).
DEAD_STEP_JOBS: Final = Statement(f"""
SELECT j.payload->>'execution_id' AS execution_id, j.payload->>'step_key' AS step_key,
       coalesce(j.last_error, 'unknown error') AS last_error
FROM job j
JOIN workflow_execution e ON e.id = (j.payload->>'execution_id')::uuid
WHERE j.kind = :job_kind AND j.state = 'dead' AND e.status NOT IN {FINISHED}
LIMIT 100
""")  # noqa: S608 - constant SQL only
FAIL_DEAD_STEP: Final = Statement("""
UPDATE step_execution SET status = 'FAILED', error = :error, finished_at = now()
WHERE execution_id = :execution_id AND step_key = :step_key
  AND status IN ('PENDING', 'RUNNING', 'WAITING')
""")

# --- Flow steps: child executions, waiting steps, held executions ---------------------------
# (DESIGN §5.1; the module docstring of `server.runs.waits` tells the whole story.)

_UNFINISHED: Final = "('PENDING', 'RUNNING', 'WAITING')"

# The workflows a reference names: its id, or every workflow with that exact name. No locks.
WORKFLOWS_BY_REF: Final = Statement("""
SELECT id, name FROM workflow_definition
WHERE name = :ref
   OR id = CASE WHEN :ref ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$' THEN :ref::uuid END
LIMIT 3
""")

# A flow step's children, started in the transaction that records the step WAITING (so they
# start exactly once: with it, or not at all): the executions (`held` ones wait for admission,
# without an entry step or job), the others' entry steps and their jobs. The unique index on
# (parent_step_run, item_index) makes a repeated start insert nothing; the jobs are enqueued
# only when every child was inserted. Locks: the new rows only.
START_CHILDREN: Final = Statement(f"""
WITH children AS (
    INSERT INTO workflow_execution
        (id, workflow_id, version_id, status, context_data, trigger_type, parent_execution_id,
         parent_step_key, parent_step_run, item_index, held, traceparent)
    SELECT new.id, :workflow_id, :version_id, 'PENDING',
           jsonb_build_object('trigger', new.input::jsonb), 'workflow', :parent_execution_id,
           :parent_step_key, :parent_step_run, new.item_index, new.held, :traceparent::text
    FROM unnest(:execution_ids::uuid[], :inputs::text[], :item_indexes::int[], :held::bool[])
         AS new (id, input, item_index, held)
    ON CONFLICT (parent_step_run, item_index) WHERE parent_step_run IS NOT NULL DO NOTHING
    RETURNING id, held
),
entry_steps AS (
    INSERT INTO step_execution (id, execution_id, step_id, step_key, status, created_at, branches)
    SELECT gen_random_uuid(), c.id, :entry_step_id, :entry_step_key, 'PENDING',
           clock_timestamp(), '{{}}'
    FROM children c WHERE NOT c.held
),
{enqueue_jobs_ctes(only_if="(SELECT count(*) FROM children) = cardinality(:execution_ids::uuid[])")}
SELECT (SELECT count(*) FROM children) AS started, (SELECT count(*) FROM enqueued_wake) AS woken
""")  # noqa: S608 - built from constants

# A flow step's own row (its id is its children's `parent_step_run`) and what it recorded.
FLOW_STEP: Final = Statement("""
SELECT id, status, result_data::text AS result_data, input_data::text AS input_data
FROM step_execution WHERE execution_id = :execution_id AND step_key = :step_key
""")

# A step run's children in item order, each with its status, error and output (the outputs
# of its final steps by key, as `server.db.execution_outcomes` computes them).
CHILD_OUTCOMES: Final = Statement(f"""
SELECT c.id, c.item_index, c.status, c.error, {FINAL_OUTPUTS.format(execution="c")}::text AS output
FROM workflow_execution c
WHERE c.parent_step_run = :step_run
ORDER BY c.item_index
""")  # noqa: S608 - built from constants

# A child's end, for its parent's waiting step, in one round trip: the step (with its kind and
# settings; no lock: resuming it takes the parent's row lock and finds it still WAITING, or
# changes nothing) and, when it is a WAITING foreach that goes on (`:child_succeeded`, or
# `on_item_failure` is `continue`), its next held child admitted: the first in item order that
# no concurrent admission has locked (SKIP LOCKED: children ending together admit different
# ones without waiting), no longer held. Only a row still held and PENDING matches, under its
# row lock, so one cancelled meanwhile (CANCEL_CHILDREN) stays cancelled.
CHILD_ENDED: Final = Statement("""
WITH parent_step AS (
    SELECT s.step_id, s.step_key, s.status, ws.kind, ws.cfg
    FROM step_execution s JOIN workflow_step ws ON ws.id = s.step_id
    WHERE s.id = :step_run AND s.execution_id = :execution_id
),
next AS (
    SELECT id FROM workflow_execution
    WHERE parent_step_run = :step_run AND held AND status = 'PENDING'
      AND EXISTS (SELECT 1 FROM parent_step
                  WHERE status = 'WAITING' AND kind = 'foreach'
                    AND (:child_succeeded OR cfg->>'on_item_failure' = 'continue'))
    ORDER BY item_index LIMIT 1
    FOR UPDATE SKIP LOCKED
),
admitted AS (
    UPDATE workflow_execution e SET held = false, updated_at = now()
    FROM next WHERE e.id = next.id
    RETURNING e.id, e.version_id
)
SELECT p.step_id, p.step_key, p.status, p.kind, p.cfg::text AS cfg,
       a.id AS admitted_id, a.version_id AS admitted_version_id
FROM parent_step p LEFT JOIN admitted a ON true
""")

# Whether a step run still has a child to wait for: started and unfinished (the partial index
# holds at most max_concurrency of them), or held.
UNFINISHED_CHILDREN: Final = Statement(f"""
SELECT EXISTS (SELECT 1 FROM workflow_execution
               WHERE parent_step_run = :step_run AND NOT held AND status IN {_UNFINISHED})
    OR EXISTS (SELECT 1 FROM workflow_execution WHERE parent_step_run = :step_run AND held)
""")  # noqa: S608 - constant SQL only

# Held executions start: no longer held (only those still held and PENDING: one cancelled
# meanwhile stays cancelled); returns them with their version. The caller then records their
# entry steps and enqueues their jobs (INSERT_ENTRY_STEPS) in the same transaction.
ADMIT_HELD: Final = Statement("""
UPDATE workflow_execution SET held = false, updated_at = now()
WHERE id = ANY(:execution_ids::uuid[]) AND held AND status = 'PENDING'
RETURNING id, version_id
""")
# The entry step (the one without incoming edges) of each version.
ENTRY_STEPS: Final = Statement("""
SELECT st.version_id, st.id, st.step_key, st.kind, st.action_key, st.cfg::text AS cfg
FROM workflow_step st
WHERE st.version_id = ANY(:version_ids::uuid[])
  AND NOT EXISTS (SELECT 1 FROM workflow_edge e WHERE e.to_step_id = st.id)
""")
INSERT_ENTRY_STEPS: Final = Statement(f"""
WITH entry_steps AS (
    INSERT INTO step_execution (id, execution_id, step_id, step_key, status, created_at, branches)
    SELECT gen_random_uuid(), new.execution_id, new.step_id, new.step_key, 'PENDING',
           clock_timestamp(), '{{}}'
    FROM unnest(:execution_ids::uuid[], :entry_step_ids::uuid[], :entry_step_keys::text[])
         AS new (execution_id, step_id, step_key)
    ON CONFLICT (execution_id, step_id) DO NOTHING
),
{enqueue_jobs_ctes()}
SELECT (SELECT count(*) FROM enqueued_wake) AS woken
""")  # noqa: S608 - built from constants

# An execution's unfinished descendants (of one step run, `:step_run`, or all: NULL) are
# cancelled, in the transaction that ends or cancels the parent; returns their ids. Then
# CANCEL_CHILD_WORK cancels their pending and waiting steps and withdraws their queued step jobs
# (one pass over the job table, which holds only live work); a running step finishes its
# attempt and starts nothing. Two statements, so the second's snapshot sees what a concurrent
# admission of a held child wrote: this UPDATE waited for that child's row lock, so the
# admission (its entry step and job) committed first. Each cancelled child ends through
# `workflow_execution_ended`.
CANCEL_CHILDREN: Final = Statement(f"""
WITH RECURSIVE tree AS (
    SELECT id FROM workflow_execution
    WHERE parent_execution_id = :execution_id
      AND (:step_run::uuid IS NULL OR parent_step_run = :step_run::uuid)
      AND status IN {_UNFINISHED}
    UNION
    SELECT c.id FROM workflow_execution c JOIN tree t ON c.parent_execution_id = t.id
    WHERE c.status IN {_UNFINISHED}
)
UPDATE workflow_execution
SET status = 'CANCELLED', held = false, error = :reason, finished_at = now(), updated_at = now()
WHERE id IN (SELECT id FROM tree) AND status IN {_UNFINISHED}
RETURNING id
""")  # noqa: S608 - constant SQL only
CANCEL_CHILD_WORK: Final = Statement("""
WITH withdrawn AS (
    DELETE FROM job
    WHERE state = 'queued' AND kind = 'workflow_step'
      AND payload->>'execution_id' IN (SELECT unnest(:execution_ids::uuid[])::text)
)
UPDATE step_execution SET status = 'CANCELLED', finished_at = now()
WHERE execution_id = ANY(:execution_ids::uuid[]) AND status IN ('PENDING', 'WAITING')
""")

# Resume a waiting step, exactly once: under its execution's row lock (taken first: `flipped`
# reads `locked`), a WAITING step becomes PENDING with what resumed it (`:resumed`, its
# result_data until it runs) and gets its job; the execution is RUNNING again (and its version
# moves, so no job plans from stale states). A step no longer WAITING (resumed already, or its
# execution over) changes nothing: `resumed` is false.
RESUME_WAITING_STEP: Final = Statement(f"""
WITH locked AS (
    SELECT status FROM workflow_execution WHERE id = :execution_id FOR NO KEY UPDATE
),
flipped AS (
    UPDATE step_execution
    SET status = 'PENDING', result_data = :resumed::jsonb, wait_key = NULL
    WHERE execution_id = :execution_id AND step_key = :step_key AND status = 'WAITING'
      AND EXISTS (SELECT 1 FROM locked WHERE status NOT IN {FINISHED})
    RETURNING id
),
touched AS (
    UPDATE workflow_execution SET status = 'RUNNING', updated_at = now()
    WHERE id = :execution_id AND EXISTS (SELECT 1 FROM flipped)
),
{enqueue_jobs_ctes(only_if="EXISTS (SELECT 1 FROM flipped)")}
SELECT EXISTS (SELECT 1 FROM flipped) AS resumed, (SELECT count(*) FROM enqueued_wake) AS woken
""")  # noqa: S608 - built from constants

# What an ended execution's `execution_ended` job needs: its parent, groups, options, summary.
ENDED_EXECUTION: Final = Statement("""
SELECT e.id, e.status, e.error, e.workflow_id, d.name AS workflow_name, e.trigger_type,
       e.parent_execution_id, e.parent_step_run, e.concurrency_key, e.overlap_key,
       v.options::text AS options, (e.context_data->'trigger')::text AS trigger
FROM workflow_execution e
JOIN workflow_version v ON v.id = e.version_id
JOIN workflow_definition d ON d.id = e.workflow_id
WHERE e.id = :execution_id
""")
FAILED_STEPS: Final = Statement("""
SELECT step_key, error FROM step_execution
WHERE execution_id = :execution_id AND status = 'FAILED'
ORDER BY finished_at NULLS LAST, step_key
""")

# --- Waiting for events (`server.runs.event_waits`, `server.runs.wait_resumes`) -------------

# The transaction-scoped advisory lock of one awaited (trigger key, correlation key) (`:wait_key`,
# its JSON text), in its own key space (`:lock_space`). A wait's first half takes it before it
# looks for an earlier event and holds it until its WAITING record and wait_key commit; an
# event's intake takes it before it records the event and looks for waiting steps. So either
# the wait sees the event or the event sees the waiting step: never neither. Lock order:
# this lock, then executions, then step rows (both sides take it before anything else).
LOCK_WAIT_KEY: Final = Statement(
    "SELECT pg_advisory_xact_lock(:lock_space::int, hashtext(:wait_key::text))"
)

# The first event of the trigger key with the correlation key accepted since the execution was
# created (the event that started the execution does not count), by the index
# trigger_event_correlation. No locks (the advisory lock is held).
EARLIER_EVENT: Final = Statement("""
SELECT ev.id, ev.payload::text AS payload
FROM workflow_execution e
JOIN trigger_event ev ON ev.trigger_key = :trigger_key AND ev.correlation_key = :correlation_key
     AND ev.received_at >= e.created_at AND ev.id IS DISTINCT FROM e.trigger_event_id
WHERE e.id = :execution_id
ORDER BY ev.received_at, ev.id
LIMIT 1
""")

# After the completion recorded the step WAITING (holding the execution's row lock, then the
# step's): what it waits for, so an event finds it by the partial index step_execution_waiting.
# Only a step still WAITING in an unfinished execution; returns the step's run (row id).
SET_WAIT_KEY: Final = Statement(f"""
UPDATE step_execution s SET wait_key = :wait_key
FROM workflow_execution e
WHERE s.execution_id = :execution_id AND s.step_key = :step_key AND s.status = 'WAITING'
  AND e.id = s.execution_id AND e.status NOT IN {FINISHED}
RETURNING s.id
""")  # noqa: S608 - constant SQL only

# The steps waiting for one (trigger key, correlation key), with their settings, in execution
# order (so every intake locks their executions in the same order). No locks: each is resumed
# under its execution's row lock (RESUME_WAITING_STEP), which finds it no longer WAITING if
# another waker came first.
WAITERS: Final = Statement("""
SELECT s.execution_id, s.step_id, s.step_key, ws.kind, ws.cfg::text AS cfg
FROM step_execution s JOIN workflow_step ws ON ws.id = s.step_id
WHERE s.wait_key = :wait_key AND s.status = 'WAITING'
ORDER BY s.execution_id, s.step_key
""")

# An event that resumed waiting steps says so next to its outcome (`no_match` when no workflow
# subscribes to the trigger key: its work was the resume).
NOTE_RESUMED_WAITS: Final = Statement("""
UPDATE trigger_event
SET outcome_detail = coalesce(outcome_detail || '; ', '') || :note
WHERE id = :event_id
""")

# A step of an execution's version by key, with its run in the execution (NULL columns: not
# run yet) and the execution's status; read under the execution's row lock (taken first by the
# caller) by the API, a resume link and a timeout. No row: no such step in the version.
RESUMABLE_STEP: Final = Statement("""
SELECT ws.id AS step_id, ws.kind, ws.cfg::text AS cfg, s.id AS step_run, s.status,
       s.result_data::text AS result_data, e.status AS execution_status
FROM workflow_execution e
JOIN workflow_step ws ON ws.version_id = e.version_id AND ws.step_key = :step_key
LEFT JOIN step_execution s ON s.execution_id = e.id AND s.step_key = :step_key
WHERE e.id = :execution_id
""")

# --- Concurrency and overlap groups (`server.runs.concurrency`) -----------------------------
# A group is (workflow, kind, key): kind `concurrency` counts executions by `concurrency_key`,
# kind `overlap` by `overlap_key`. Every decision about a group (an arrival starts, waits held
# or is skipped; a held one is admitted) is made under the group's transaction-level advisory
# lock, taken by its own statement BEFORE the reads that decide: in READ COMMITTED each
# statement takes its snapshot when it starts, so a read after the lock sees everything the
# lock's previous holder committed, whereas a read in the same statement as the lock would not.

# The groups' advisory locks (two-int form: `:lock_space` is the groups' own key space), taken
# one after the other in the order given: callers sort them, so two transactions never wait for
# each other's groups in a cycle. Held to the end of the transaction.
LOCK_GROUPS: Final = Statement("""
SELECT count(*) FROM (
    SELECT pg_advisory_xact_lock(:lock_space, key) FROM unnest(:lock_keys::int[]) AS key
) locked
""")
# One more group's lock, only if it is free at once (taken out of order: waiting could close a
# cycle with a transaction that holds it and waits for one of ours).
TRY_LOCK_GROUP: Final = Statement("SELECT pg_try_advisory_xact_lock(:lock_space, :lock_key)")

# Per group, in the order given: how many of its executions are started and unfinished
# (`running`: not held, PENDING, RUNNING or WAITING), and its first held execution in arrival
# order (created_at, id) with that execution's own groups and its version's concurrency limit.
# Served by the partial indexes workflow_execution_concurrency and _overlap (a key compared
# with `=` is not null, and the status list is the indexes' own). No locks.
_GROUP_EXECUTIONS: Final = f"""workflow_execution e
    WHERE g.kind = '{{kind}}' AND e.workflow_id = g.workflow_id AND e.{{kind}}_key = g.key
      AND e.status IN {_UNFINISHED}"""
GROUP_STATES: Final = Statement(f"""
SELECT g.kind, g.workflow_id, g.key,
       coalesce(running_c.n, running_o.n) AS running,
       head.id AS head_id, head.concurrency_key AS head_concurrency_key,
       head.overlap_key AS head_overlap_key,
       (v.options->'concurrency'->>'limit')::int AS head_concurrency_limit
FROM unnest(:kinds::text[], :workflow_ids::uuid[], :keys::text[]) WITH ORDINALITY
     AS g (kind, workflow_id, key, n)
LEFT JOIN LATERAL (
    SELECT count(*) AS n FROM {_GROUP_EXECUTIONS.format(kind="concurrency")} AND NOT e.held
) running_c ON g.kind = 'concurrency'
LEFT JOIN LATERAL (
    SELECT count(*) AS n FROM {_GROUP_EXECUTIONS.format(kind="overlap")} AND NOT e.held
) running_o ON g.kind = 'overlap'
LEFT JOIN LATERAL (
    (SELECT e.id, e.concurrency_key, e.overlap_key, e.version_id
     FROM {_GROUP_EXECUTIONS.format(kind="concurrency")} AND e.held
     ORDER BY e.created_at, e.id LIMIT 1)
    UNION ALL
    (SELECT e.id, e.concurrency_key, e.overlap_key, e.version_id
     FROM {_GROUP_EXECUTIONS.format(kind="overlap")} AND e.held
     ORDER BY e.created_at, e.id LIMIT 1)
) head ON true
LEFT JOIN workflow_version v ON v.id = head.version_id
ORDER BY g.n
""")  # noqa: S608 - built from constants
