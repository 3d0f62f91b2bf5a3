"""The invariants `switchyard check` proves, as SQL (the runner: `server.db.invariant_runner`).

Each invariant is one commented SQL constant that returns the rows violating it: id columns
(uuid or text, named for what they identify) and a `detail` a person can act on. They run
inside ONE `REPEATABLE READ READ ONLY` transaction, so every check sees the same snapshot (a
step result and the job it settled commit together, so a consistent snapshot never shows half
of a change), with a `statement_timeout` and a `lock_timeout` so a check is bounded in time
on a live system: each statement runs under its own savepoint, and one that times out is
reported as incomplete while the others still run. Nothing here writes; the server refuses
writes in a read-only transaction anyway.

Grace periods absorb the work a healthy system has in flight: an event recorded by a database
trigger waits for its fan-out job, a step job that died is failed by the next maintenance pass,
a rescuer sweeps expired leases every half lease, a step running when its execution was
cancelled finishes its attempt. Timestamps are compared with the database's clock (`now()` is
the transaction's start), never a replica's.

The published documents' comparison with the object store runs outside the transaction
(`server.db.stored_documents`); `PUBLISHED_GRAPHS` is its SQL.
"""

from __future__ import annotations

from typing import Final

import msgspec

from server.engine.planning import FINISHED_EXECUTION_SQL

# Outcomes `server.runs.intake` records: accepted (with executions), filtered and no_match (with
# the reason in outcome_detail), pending (a database trigger's event not fanned out yet). A
# duplicate delivery records no row: it finds the first event.
EVENT_OUTCOMES: Final = ("accepted", "filtered", "no_match", "pending")

# The live step jobs (queued, waiting to run or to wake a delay, or running under a lease), by
# execution and step. Step jobs carry {"execution_id", "step_key", "resume"?}; the id is cast only
# when it is one, so a malformed payload cannot make the check fail. The job table holds only live and dead
# work, so this is a scan of a small table.
_LIVE_STEP_JOBS: Final = """live_step_jobs AS (
    SELECT id, state,
           CASE WHEN payload->>'execution_id' ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                THEN (payload->>'execution_id')::uuid END AS execution_id,
           payload->>'step_key' AS step_key,
           coalesce(payload->>'resume', 'false') = 'true' AS resume
    FROM job
    WHERE kind = 'workflow_step' AND state IN ('queued', 'running')
)"""

# 1. Every event has its executions or a recorded reason. $1: the grace (seconds) of a pending
# event; $2: the retention (seconds): older accepted events may have lost their executions to
# pruning, which deletes executions before their events. Outcomes: accepted needs at least one
# execution, or the reason they are gone (deleting a workflow records it on their events);
# filtered and no_match need a reason and no execution; pending (recorded by a
# database trigger, fanned out by its `trigger_event` job, written in the same transaction)
# needs that live job and must not be older than the grace. Any other outcome is unknown.
EVENTS_WITHOUT_EXECUTIONS: Final = f"""
WITH judged AS NOT MATERIALIZED (
    SELECT id, trigger_key, outcome, received_at,
           coalesce(outcome_detail, '') = '' AS no_reason
    FROM trigger_event
    WHERE outcome <> 'accepted' OR received_at >= now() - make_interval(secs => $2)
),
broken AS (
    -- Accepted without an execution (anti-join: one pass over the execution index).
    SELECT ev.*, 'accepted but has no execution' AS problem
    FROM judged ev
    WHERE ev.outcome = 'accepted' AND ev.no_reason
      AND NOT EXISTS (SELECT 1 FROM workflow_execution ex WHERE ex.trigger_event_id = ev.id)
    UNION ALL
    -- Refused, yet without a reason or with executions.
    SELECT ev.*, CASE WHEN ev.no_reason
                      THEN ev.outcome || ' without a recorded reason (outcome_detail is empty)'
                      ELSE ev.outcome || ' but has executions' END
    FROM judged ev
    WHERE ev.outcome IN ('filtered', 'no_match')
      AND (ev.no_reason
           OR EXISTS (SELECT 1 FROM workflow_execution ex WHERE ex.trigger_event_id = ev.id))
    UNION ALL
    -- Pending without its fan-out job, or for longer than the grace.
    SELECT ev.*, CASE
        WHEN NOT EXISTS (SELECT 1 FROM job j WHERE j.unique_key = 'event:' || ev.id
                                              AND j.state IN ('queued', 'running'))
          THEN 'pending (database change) with no queued or running fan-out job'
        ELSE format('pending (database change) for %s, longer than the grace',
                    date_trunc('second', now() - ev.received_at)) END
    FROM judged ev
    WHERE ev.outcome = 'pending'
      AND (ev.received_at < now() - make_interval(secs => $1)
           OR NOT EXISTS (SELECT 1 FROM job j WHERE j.unique_key = 'event:' || ev.id
                                                AND j.state IN ('queued', 'running')))
    UNION ALL
    SELECT ev.*, format('unknown outcome %L', ev.outcome)
    FROM judged ev
    WHERE ev.outcome NOT IN {EVENT_OUTCOMES}
)
SELECT id AS event_id, trigger_key, problem AS detail FROM broken ORDER BY received_at, id
"""  # noqa: S608 - constant SQL only

# 2. No execution is unfinished without a live job, a due wake-up or a waiting reason. An
# unfinished (PENDING, RUNNING, WAITING) execution needs a live job of its own, unless a step of
# it waits for something outside it (a flow step: its children, an event) or it is held (not
# started yet) with something that will admit it: its foreach step still waiting, or a started
# unfinished execution of its concurrency or overlap group, or an `execution_ended` job in
# flight (which admits the next). Each unfinished step needs its own reason too: a PENDING or
# RUNNING step its step job (queued, or running, or handed on to it); a WAITING delay its
# wake-up job (`resume`); a WAITING call_workflow or foreach an unfinished child of its run or
# a child's `execution_ended` job in flight; a WAITING wait_for_event with a timeout its
# `wait_timeout` job (without one, nothing: it waits for an event, a resume call or its link). Each is written in the transaction that plans the step.
# $1: the grace (seconds) since the execution last changed: a step job that died outside its
# handler leaves its execution without a job until the scheduler's maintenance pass (every
# minute) fails it. The detail names the dead job if any.
STALLED_EXECUTIONS: Final = f"""
WITH {_LIVE_STEP_JOBS},
ended_jobs AS (
    SELECT payload->>'execution_id' AS execution_id FROM job
    WHERE kind = 'execution_ended' AND state IN ('queued', 'running')
),
unfinished AS (
    SELECT id, status, held, parent_step_run, workflow_id, concurrency_key, overlap_key
    FROM workflow_execution
    WHERE status IN ('PENDING', 'RUNNING', 'WAITING')
      AND updated_at < now() - make_interval(secs => $1)
),
without_job AS (
    SELECT u.id AS execution_id, NULL::text AS step_key,
           CASE WHEN u.held THEN 'held PENDING execution has nothing that will start it (no '
                                 || 'waiting foreach step, no started execution of its group)'
                ELSE format('%s execution has no queued or running job', u.status) END
               AS problem
    FROM unfinished u
    WHERE NOT EXISTS (SELECT 1 FROM live_step_jobs j WHERE j.execution_id = u.id)
      AND NOT EXISTS (
          SELECT 1 FROM step_execution s JOIN workflow_step ws ON ws.id = s.step_id
          WHERE s.execution_id = u.id AND s.status = 'WAITING'
            AND ws.kind IN ('call_workflow', 'foreach', 'wait_for_event'))
      AND NOT (u.held AND (
          EXISTS (SELECT 1 FROM step_execution ps
                  WHERE ps.id = u.parent_step_run AND ps.status IN ('PENDING', 'RUNNING', 'WAITING'))
          OR EXISTS (SELECT 1 FROM workflow_execution g
                     WHERE g.workflow_id = u.workflow_id AND NOT g.held
                       AND g.status IN ('PENDING', 'RUNNING', 'WAITING')
                       AND (g.concurrency_key = u.concurrency_key OR g.overlap_key = u.overlap_key))
          OR (u.concurrency_key IS NOT NULL OR u.overlap_key IS NOT NULL)
             AND EXISTS (SELECT 1 FROM ended_jobs)))
),
step_without_job AS (
    SELECT u.id AS execution_id, s.step_key,
           format('%s %s step of a %s execution has no %s', s.status, ws.kind, u.status,
                  CASE WHEN s.status <> 'WAITING' THEN 'queued or running job'
                       WHEN ws.kind = 'delay' THEN 'queued or running wake-up job'
                       WHEN ws.kind = 'wait_for_event' THEN 'queued or running timeout job'
                       ELSE 'unfinished child execution and no child end in flight' END)
               AS problem
    FROM unfinished u
    JOIN step_execution s ON s.execution_id = u.id
    JOIN workflow_step ws ON ws.id = s.step_id
    WHERE s.status IN ('PENDING', 'RUNNING', 'WAITING')
      AND u.id NOT IN (SELECT execution_id FROM without_job)
      AND CASE
          WHEN s.status <> 'WAITING' THEN NOT EXISTS (
              SELECT 1 FROM live_step_jobs j
              WHERE j.execution_id = u.id AND j.step_key = s.step_key)
          WHEN ws.kind = 'wait_for_event' THEN
              -- a wait with a timeout needs its timeout job; without one it waits as long
              -- as it takes (an event, a resume call or its link resumes it)
              ws.cfg->'timeout_seconds' IS NOT NULL AND ws.cfg->>'timeout_seconds' <> 'null'
              AND NOT EXISTS (SELECT 1 FROM job t
                              WHERE t.kind = 'wait_timeout' AND t.state IN ('queued', 'running')
                                AND t.payload->>'step_run' = s.id::text)
          WHEN ws.kind IN ('call_workflow', 'foreach') THEN
              NOT EXISTS (SELECT 1 FROM workflow_execution c
                          WHERE c.parent_step_run = s.id
                            AND c.status IN ('PENDING', 'RUNNING', 'WAITING'))
              AND NOT EXISTS (SELECT 1 FROM workflow_execution c
                              JOIN ended_jobs e ON e.execution_id = c.id::text
                              WHERE c.parent_step_run = s.id)
          ELSE NOT EXISTS (
              SELECT 1 FROM live_step_jobs j
              WHERE j.execution_id = u.id AND j.step_key = s.step_key AND j.resume)
      END
)
SELECT stalled.execution_id, stalled.step_key,
       stalled.problem || CASE WHEN dead.id IS NULL THEN ''
                               ELSE format(' (job %s is dead: %s)', dead.id, dead.last_error) END
           AS detail
FROM (SELECT * FROM without_job UNION ALL SELECT * FROM step_without_job) stalled
LEFT JOIN LATERAL (
    SELECT id, left(coalesce(last_error, 'no error recorded'), 200) AS last_error FROM job
    WHERE kind = 'workflow_step' AND state = 'dead'
      AND payload->>'execution_id' = stalled.execution_id::text
      AND (stalled.step_key IS NULL OR payload->>'step_key' = stalled.step_key)
    ORDER BY updated_at DESC LIMIT 1
) dead ON true
ORDER BY stalled.execution_id, stalled.step_key
"""  # noqa: S608 - constant SQL only


def _without_unique_index(table: str, columns: tuple[str, ...]) -> str:
    """A condition true unless `table` has a valid, total (not partial, no expression) unique
    index on exactly `columns`. Such an index proves the key unique; PostgreSQL evaluates this
    constant condition once, before the scan it guards, and skips the scan when it is false."""
    names = ", ".join(f"'{column}'" for column in sorted(columns))
    return f"""NOT EXISTS (
        SELECT 1 FROM pg_index i
        WHERE i.indrelid = '{table}'::regclass AND i.indisunique AND i.indisvalid
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a
               WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = ARRAY[{names}]
          AND i.indnkeyatts = {len(columns)}
    )"""  # noqa: S608 - constant names only


# 3. No (execution, step) has two successful results. The unique index step_execution_step_key
# on (execution_id, step_id) makes a second row impossible, so while a valid one is there the
# answer is proven without reading the table (a scan of every step result costs seconds at a
# million rows); without it, every step is grouped.
DUPLICATE_STEP_RESULTS: Final = f"""
SELECT execution_id, step_id, min(step_key) AS step_key,
       string_agg(id::text, ',' ORDER BY created_at, id) AS step_execution_ids,
       format('%s successful results for one step', count(*)) AS detail
FROM step_execution
WHERE status = 'SUCCESS' AND {_without_unique_index("step_execution", ("execution_id", "step_id"))}
GROUP BY execution_id, step_id
HAVING count(*) > 1
ORDER BY execution_id, step_key
"""  # noqa: S608 - constant SQL only

# 4. No task is duplicated per idempotency key: `task_management` creates a task under its
# step's stable key (execution id + step id), and a retried or rescued step finds the task its
# earlier attempt committed. The unique constraint on tasks.idempotency_key proves the first
# part while it is valid (as in 3). Also: one step execution never created tasks under two keys
# (one hash aggregate over the tasks that name their step execution).
DUPLICATE_TASKS: Final = f"""
SELECT idempotency_key, NULL::uuid AS step_execution_id,
       string_agg(id::text, ',' ORDER BY created_at, id) AS task_ids,
       format('%s tasks share one idempotency key', count(*)) AS detail
FROM tasks
WHERE idempotency_key IS NOT NULL AND {_without_unique_index("tasks", ("idempotency_key",))}
GROUP BY idempotency_key
HAVING count(*) > 1
UNION ALL
SELECT NULL, step_execution_id,
       string_agg(id::text, ',' ORDER BY created_at, id),
       format('one step execution created %s tasks under different keys',
              count(DISTINCT idempotency_key))
FROM tasks
WHERE step_execution_id IS NOT NULL AND idempotency_key IS NOT NULL
GROUP BY step_execution_id
HAVING min(idempotency_key) <> max(idempotency_key)
"""  # noqa: S608 - constant SQL only

# 5. No live job belongs to a finished execution. Cancelling or failing an execution withdraws
# its queued step jobs in the same transaction; a step running at that moment finishes its
# attempt (and a failed attempt may be re-queued with backoff before it runs, finds the
# execution over and leaves). $1: how long after the execution finished that may take (the job
# timeout plus the longest retry backoff, by default).
JOBS_OF_FINISHED_EXECUTIONS: Final = f"""
WITH {_LIVE_STEP_JOBS}
SELECT j.id AS job_id, e.id AS execution_id,
       format('%s job (step %L) of an execution %s since %s', j.state, j.step_key, e.status,
              date_trunc('second', e.finished_at)) AS detail
FROM live_step_jobs j
JOIN workflow_execution e ON e.id = j.execution_id
WHERE e.status IN {FINISHED_EXECUTION_SQL}
  AND coalesce(e.finished_at, e.updated_at) < now() - make_interval(secs => $1)
ORDER BY j.id
"""  # noqa: S608 - constant SQL only

# 6. No lease is held past its TTL plus the sweep interval. A running job's `locked_until` is
# its lease's end (TTL from the last heartbeat); the rescuer re-queues expired leases every half
# lease. $1: the grace (seconds) past `locked_until`. Served by the partial index job_lease_idx.
EXPIRED_LEASES: Final = """
SELECT id AS job_id, kind,
       CASE WHEN locked_until IS NULL THEN format('running %s job has no lease end', kind)
            ELSE format('running %s job held by %s: its lease ended %s ago', kind,
                        coalesce(locked_by, 'nobody'), date_trunc('second', now() - locked_until))
       END AS detail
FROM job
WHERE state = 'running'
  AND (locked_until IS NULL OR locked_until < now() - make_interval(secs => $1))
ORDER BY locked_until NULLS FIRST, id
"""

# 7. Every capture trigger that the registry lists is installed: for each `database` source, the
# row trigger named after its key (`server.db.database_triggers.trigger_name`: "switchyard_" and
# 20 hex digits of the key's SHA-256) on its table, enabled, calling switchyard_capture_change
# for at least the registered operations (INSERT 4, DELETE 8, UPDATE 16 in pg_trigger.tgtype;
# all three when the config names none). A table name without a schema is in `public`.
MISSING_CAPTURE_TRIGGERS: Final = """
WITH sources AS (
    SELECT r.trigger_key, r.config->>'table' AS table_name,
           'switchyard_' || left(encode(sha256(convert_to(r.trigger_key, 'UTF8')), 'hex'), 20)
               AS trigger_name,
           CASE WHEN jsonb_typeof(r.config->'operations') = 'array' THEN (
               SELECT coalesce(sum(DISTINCT CASE op WHEN 'INSERT' THEN 4 WHEN 'DELETE' THEN 8
                                                    WHEN 'UPDATE' THEN 16 ELSE 0 END), 0)
               FROM jsonb_array_elements_text(r.config->'operations') op)
           ELSE 28 END AS operations
    FROM workflow_trigger_registry r
    WHERE r.type = 'database'
),
located AS (
    SELECT s.*, to_regclass(format('%I.%I',
               coalesce(substring(s.table_name FROM '^(.*)\\.'), 'public'),
               substring(s.table_name FROM '([^.]*)$'))) AS relation
    FROM sources s
)
SELECT l.trigger_key, l.table_name AS "table",
       CASE
         WHEN l.table_name IS NULL THEN 'the source names no table'
         WHEN l.relation IS NULL THEN format('table %s does not exist', l.table_name)
         WHEN t.oid IS NULL
           THEN format('capture trigger %s is missing on %s', l.trigger_name, l.relation)
         WHEN t.tgenabled = 'D'
           THEN format('capture trigger %s on %s is disabled', l.trigger_name, l.relation)
         WHEN t.tgfoid IS DISTINCT FROM to_regprocedure('switchyard_capture_change()')
           THEN format('trigger %s on %s calls %s, not switchyard_capture_change', l.trigger_name,
                       l.relation, t.tgfoid::regproc)
         ELSE format('capture trigger %s on %s misses some registered operations',
                     l.trigger_name, l.relation)
       END AS detail
FROM located l
LEFT JOIN pg_trigger t ON t.tgrelid = l.relation AND t.tgname = l.trigger_name
WHERE l.relation IS NULL OR t.oid IS NULL OR t.tgenabled = 'D'
   OR t.tgfoid IS DISTINCT FROM to_regprocedure('switchyard_capture_change()')
   OR (t.tgtype::int & l.operations) <> l.operations
ORDER BY l.trigger_key
"""

# 8 (its rows). Every published version with what the object store must hold for it: its key,
# and its own steps (in document order: position, then key) and edges as JSON, the parts of the
# document a version owns and that never change once it is published.
PUBLISHED_GRAPHS: Final = """
SELECT v.id AS version_id, v.workflow_id, v.version_num, v.s3_key,
       (SELECT coalesce(json_agg(json_build_object(
                    'key', s.step_key, 'name', s.name, 'kind', s.kind,
                    'action_key', s.action_key, 'cfg', s.cfg) ORDER BY s.position, s.step_key),
                '[]')
        FROM workflow_step s WHERE s.version_id = v.id)::text AS steps,
       (SELECT coalesce(json_agg(json_build_object(
                    'from', f.step_key, 'to', t.step_key, 'branch_key', e.branch_key)), '[]')
        FROM workflow_edge e
        JOIN workflow_step f ON f.id = e.from_step_id
        JOIN workflow_step t ON t.id = e.to_step_id
        WHERE e.version_id = v.id)::text AS edges
FROM workflow_version v
WHERE v.status = 'published'
ORDER BY v.workflow_id, v.version_num
"""


class Graces(msgspec.Struct, frozen=True, kw_only=True):
    """How much in-flight work a healthy system may have (seconds); see each invariant."""

    pending_seconds: float = 300.0
    stall_seconds: float = 120.0
    lease_seconds: float = 60.0
    finish_seconds: float = 900.0
    retention_seconds: float = 30 * 86_400.0


class Invariant(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    sql: str
    graces: tuple[str, ...] = ()  # the Graces fields passed as $1, $2, ...

    def arguments(self, graces: Graces) -> list[float]:
        return [float(getattr(graces, field)) for field in self.graces]


DOCUMENTS_INVARIANT: Final = "published_documents_stored"

INVARIANTS: Final = (
    Invariant(
        name="events_have_executions",
        description="every event has its executions or a recorded reason",
        sql=EVENTS_WITHOUT_EXECUTIONS,
        graces=("pending_seconds", "retention_seconds"),
    ),
    Invariant(
        name="unfinished_executions_have_work",
        description="no execution is unfinished without a live job, a due wake-up or a waiting reason",
        sql=STALLED_EXECUTIONS,
        graces=("stall_seconds",),
    ),
    Invariant(
        name="one_success_per_step",
        description="no (execution, step) has two successful results",
        sql=DUPLICATE_STEP_RESULTS,
    ),
    Invariant(
        name="one_task_per_key",
        description="no task is duplicated per idempotency key",
        sql=DUPLICATE_TASKS,
    ),
    Invariant(
        name="no_jobs_of_finished_executions",
        description="no live job belongs to a finished execution",
        sql=JOBS_OF_FINISHED_EXECUTIONS,
        graces=("finish_seconds",),
    ),
    Invariant(
        name="leases_within_ttl",
        description="no lease is held past its TTL plus the sweep interval",
        sql=EXPIRED_LEASES,
        graces=("lease_seconds",),
    ),
    Invariant(
        name="capture_triggers_installed",
        description="every capture trigger the registry lists is installed",
        sql=MISSING_CAPTURE_TRIGGERS,
    ),
)
DOCUMENTS_DESCRIPTION: Final = (
    "every published version's document is in the object store and matches its rows"
)
