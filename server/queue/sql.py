"""Every SQL statement the queue runs, in one place, with what it locks and why.

Conventions: `$n` parameters only (no value is ever formatted into a statement); time is always
the database's `now()`, so replicas with skewed clocks agree on leases and delays; batches are
passed as parallel arrays (expanded with `unnest` or matched with `= ANY`), one round trip per
batch. Every statement that changes a running job is fenced: it matches `lease_token` as well
as `id`, so a worker whose lease expired and was taken over (paused, partitioned) changes
nothing. Every statement that makes a job claimable notifies `switchyard_job` (delivered at
commit, so a rolled-back enqueue wakes nobody); the payload is empty, so PostgreSQL folds the
notifications of one transaction into one, and a wake-up means "look at the table", never
"here is your job".
"""

from __future__ import annotations

from typing import Final

from server.statements import Statement

JOB_CHANNEL: Final = "switchyard_job"

# Inserts one job in the caller's transaction. Takes no lock beyond the new row, except that
# with a unique_key the partial unique index (live jobs only) serialises concurrent inserts of
# the same key; the loser is skipped (no row returned) instead of failing the caller's work.
# $4 NULL means now(); $5 is added, so both absolute and relative times use the db clock.
ENQUEUE_JOB: Final = """
WITH inserted AS (
    INSERT INTO job (kind, payload, priority, run_at, max_attempts, unique_key)
    VALUES ($1, $2::text::jsonb, $3, COALESCE($4::timestamptz, now()) + make_interval(secs => $5),
            $6, $7)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('queued', 'running')
    DO NOTHING
    RETURNING id
),
-- One empty notification per statement; the LEFT JOIN below is what makes it run.
wake AS (SELECT pg_notify('switchyard_job', '') FROM inserted LIMIT 1)
SELECT inserted.id FROM inserted LEFT JOIN wake ON true
"""


def enqueue_jobs_ctes(*, only_if: str = "true") -> str:
    """The batched enqueue as two CTEs, `enqueued` (the inserted ids) and `enqueued_wake`,
    for a statement of its own or another module's (the runtime's intake starts executions and
    enqueues their first steps in one statement). Named parameters (`server.statements`): the
    seven parallel arrays of `client.job_arrays`, `:job_kinds` to `:job_unique_keys`;
    `only_if` is a SQL condition on the rest of the caller's statement. The caller's SELECT
    must read `enqueued_wake` (a CTE that is not read does not run).

    One multi-row INSERT over the arrays (one round trip, one plan); same locking as
    ENQUEUE_JOB; duplicate unique keys, also within the batch, are skipped.
    """
    return f"""enqueued AS (
    INSERT INTO job (kind, payload, priority, run_at, max_attempts, unique_key)
    SELECT kind, payload::jsonb, priority, COALESCE(run_at, now()) + make_interval(secs => delay),
           max_attempts, unique_key
    FROM unnest(:job_kinds::text[], :job_payloads::text[], :job_priorities::smallint[],
                :job_run_ats::timestamptz[], :job_delays::float8[], :job_max_attempts::integer[],
                :job_unique_keys::text[])
         AS new (kind, payload, priority, run_at, delay, max_attempts, unique_key)
    WHERE {only_if}
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('queued', 'running')
    DO NOTHING
    RETURNING id
),
enqueued_wake AS (SELECT pg_notify('switchyard_job', '') FROM enqueued LIMIT 1)"""  # noqa: S608 - the caller's constant SQL only


ENQUEUE_JOBS: Final = Statement(f"""
WITH {enqueue_jobs_ctes()}
SELECT enqueued.id FROM enqueued LEFT JOIN enqueued_wake ON true
""")  # noqa: S608 - built from constants


# A worker's whole cycle in one statement (one round trip, one commit): finish the jobs whose
# leases are in $4/$5 (maybe none) and claim up to $1 due jobs, most urgent first, for worker
# $2 with a lease of $3 seconds.
# `done` deletes the finished jobs, so they leave the hot table at once. It is fenced: a row
# matches only while its lease_token is one of ours. Tokens are unique per claim and are set
# only while a job is running (every other transition clears them), so `id = ANY AND token =
# ANY` pairs them exactly and implies `running`; written this way it is a primary-key lookup
# whatever the plan. The ids it returns come back with kind NULL; a lease missing from them was
# lost (rescued and maybe re-claimed), and that run changed nothing.
# `next` walks the partial claim index (priority DESC, run_at, id) of queued jobs and row-locks
# what it returns; SKIP LOCKED passes over rows another claimer is locking right now, so
# concurrent workers never wait for each other and never get the same row. It is a
# MATERIALIZED CTE whose ids the update takes as one array, not `id IN (SELECT ... LIMIT n FOR
# UPDATE SKIP LOCKED)`, which can be re-evaluated and claim more than n rows (PostgreSQL bug
# #15715); the array also keeps the update on the primary key in a generic plan.
# `claimed` turns the locked rows into running jobs: the attempt is counted at claim time (so a
# crash or a shutdown counts it too) and a fresh lease_token fences every later change.
# Data-modifying CTEs always run to completion, whatever the final SELECT reads.
def _claim_jobs(*, waits: bool) -> str:
    """CLAIM_JOBS; `waits` adds two columns (seconds, on the database clock) for tracing: how
    long each claimed job waited since it was created, and since it was due (`run_at`)."""
    columns = nulls = ""
    if waits:
        columns = """,
              extract(epoch FROM now() - job.created_at)::float8 AS since_created,
              extract(epoch FROM now() - job.run_at)::float8 AS since_due"""
        nulls = ", NULL, NULL"
    return f"""
WITH done AS (
    DELETE FROM job
    WHERE id = ANY($4::bigint[]) AND lease_token = ANY($5::uuid[])
    RETURNING id
),
next AS MATERIALIZED (
    SELECT id
    FROM job
    WHERE state = 'queued' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE job
    SET state = 'running',
        attempts = job.attempts + 1,
        locked_by = $2,
        locked_until = now() + make_interval(secs => $3),
        lease_token = gen_random_uuid(),
        updated_at = now()
    WHERE job.id = ANY (ARRAY(SELECT id FROM next))
    RETURNING job.id, job.kind, job.payload::text AS payload, job.priority, job.attempts,
              job.max_attempts, job.lease_token, job.locked_until{columns}
)
SELECT *
FROM claimed
UNION ALL
SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, NULL{nulls} FROM done
"""  # noqa: S608 - built from constants


CLAIM_JOBS: Final = _claim_jobs(waits=False)
CLAIM_JOBS_WITH_WAITS: Final = _claim_jobs(waits=True)

# Session settings for the connection a worker claims and completes on (reset when it goes
# back to the pool). synchronous_commit: its commits return before their WAL reaches disk (the
# WAL writer flushes it within milliseconds). Safe for the claim cycle because the queue is
# at-least-once anyway: if the server crashes in that window, a lost claim puts the job back in
# the queue (the worker's later changes are fenced out) and a lost completion leaves a lease
# that expires and is rescued, so the job runs again; nothing is lost. It saves a WAL flush per
# cycle, about a millisecond on an idle server, most of the enqueue-to-start latency.
# Enqueues, handler transactions (step results and successor jobs), retries and dead jobs keep
# the durable default. plan_cache_mode: CLAIM_JOBS is planned once and reused; its plan does
# not depend on the values, and re-planning it every cycle took as long as running it.
PREPARE_CLAIM_CONNECTION: Final = (
    "SET synchronous_commit = off; SET plan_cache_mode = force_generic_plan"
)

# How long until the next queued job is due (negative: overdue; NULL: none queued). Read-only,
# no row locks; an idle worker sleeps that long (capped by the poll interval) instead of polling
# blindly.
SECONDS_UNTIL_NEXT_JOB: Final = """
SELECT EXTRACT(EPOCH FROM min(run_at) - now())::float8
FROM job
WHERE state = 'queued'
"""

# Heartbeat: pushes the lease of every job in the batch that is still ours to now() + $3 s.
# Row-locks those rows for the instant of the update; rows whose token changed (rescued and
# re-claimed) are not matched, and their absence from the result tells the worker it lost them.
EXTEND_LEASES: Final = """
UPDATE job
SET locked_until = now() + make_interval(secs => $3), updated_at = now()
FROM unnest($1::bigint[], $2::uuid[]) AS held (id, lease_token)
WHERE job.id = held.id AND job.lease_token = held.lease_token AND job.state = 'running'
RETURNING job.id
"""

# Completes one job inside the caller's transaction (a handler's result and its successor jobs
# commit together with it). Row-locks the job until that transaction ends, so a rescuer cannot
# re-queue it meanwhile; no row means the lease is no longer ours and the caller rolls back.
COMPLETE_JOB: Final = """
DELETE FROM job
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING id
"""


# Hands a running job on to its next piece of work in the caller's transaction, instead of
# completing it: the runtime runs an execution's next step in the job of the step before it.
# Same row and lease (the heartbeat goes on); the new payload and unique_key; attempts start
# again at 1 (this run is the new work's first attempt) with the new work's max_attempts.
# Fenced and row-locking like COMPLETE_JOB. The partial unique index refuses a unique_key a
# live job already holds (the caller only hands on work it has just planned, under its lock).
# Named parameters: the lease (`:job_id`, `:lease_token`) and the next work (`:next_payload`,
# NULL to complete the job instead; `:next_max_attempts`, `:next_unique_key`).
_HAND_ON: Final = """kind = coalesce(:next_kind::text, kind), payload = :next_payload::text::jsonb,
        attempts = 1, max_attempts = :next_max_attempts, unique_key = :next_unique_key,
        updated_at = now()"""

CONTINUE_JOB: Final = Statement(f"""
UPDATE job
SET {_HAND_ON}
WHERE id = :job_id AND lease_token = :lease_token AND state = 'running'
RETURNING id
""")  # noqa: S608 - built from constants


def settle_job_ctes(*, after: str, only_if: str) -> tuple[str, str]:
    """Completing or handing on a running job inside another module's statement: the runtime
    records a step and settles its job in one statement. Named parameters as CONTINUE_JOB's
    (`client.settle_job_args`): `:next_payload` NULL completes the job.

    Returns two lists of CTEs for the caller's WITH. The first, `held_job`, row-locks the job
    while the lease is ours (read it to fence the rest of the statement); it runs once `after`
    (a CTE name) has run, so the caller's own locks come first. The second, `completed_job` and
    `continued_job`, deletes or hands on the job if `only_if`, a condition on the caller's CTEs.
    """
    held = f"""held_job AS (
    SELECT id FROM job
    WHERE id = :job_id AND lease_token = :lease_token AND state = 'running'
      AND (SELECT count(*) FROM {after}) >= 0
    FOR UPDATE
)"""  # noqa: S608 - the caller's constant SQL only
    settle = f"""completed_job AS (
    DELETE FROM job
    WHERE id = :job_id AND lease_token = :lease_token AND :next_payload::text IS NULL
      AND {only_if}
    RETURNING id
),
continued_job AS (
    UPDATE job
    SET {_HAND_ON}
    WHERE id = :job_id AND lease_token = :lease_token AND :next_payload::text IS NOT NULL
      AND {only_if}
    RETURNING id
)"""  # noqa: S608 - the caller's constant SQL only
    return held, settle


# Puts a failed attempt back in the queue $3 seconds from now, recording the error. Fenced.
# The attempt was counted at claim time; a job that has used its last attempt becomes dead
# instead, so no path runs a job more than max_attempts times. The notification lets idle
# workers re-plan their sleep around the new run_at.
RETRY_JOB: Final = """
WITH retried AS (
    UPDATE job
    SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
        run_at = now() + make_interval(secs => $3), last_error = $4,
        locked_by = NULL, locked_until = NULL, lease_token = NULL, updated_at = now()
    WHERE id = $1 AND lease_token = $2 AND state = 'running'
    RETURNING id, state
),
wake AS (SELECT pg_notify('switchyard_job', '') FROM retried WHERE state = 'queued' LIMIT 1)
SELECT retried.state FROM retried LEFT JOIN wake ON true
"""

# Gives up on a running job: dead, kept with its error for an operator. Fenced.
MARK_JOB_DEAD: Final = """
UPDATE job
SET state = 'dead', last_error = $3, locked_by = NULL, locked_until = NULL, lease_token = NULL,
    updated_at = now()
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING id
"""

# Graceful shutdown: hands back jobs this worker still holds. The attempt stays counted (it
# did start); a job that has used its last attempt becomes dead rather than looping forever.
# Fenced per lease; notifies so another worker picks the jobs up at once.
RELEASE_JOBS: Final = """
WITH released AS (
    UPDATE job
    SET state = CASE WHEN job.attempts >= job.max_attempts THEN 'dead' ELSE 'queued' END,
        run_at = now(), last_error = $3,
        locked_by = NULL, locked_until = NULL, lease_token = NULL, updated_at = now()
    FROM unnest($1::bigint[], $2::uuid[]) AS held (id, lease_token)
    WHERE job.id = held.id AND job.lease_token = held.lease_token AND job.state = 'running'
    RETURNING job.id, job.kind, job.state, job.attempts
),
wake AS (SELECT pg_notify('switchyard_job', '') FROM released WHERE state = 'queued' LIMIT 1)
SELECT released.id, released.kind, released.state, released.attempts
FROM released LEFT JOIN wake ON true
"""

# Any worker may sweep, one at a time: a transaction-scoped advisory lock (released at commit)
# that the others fail to take and skip. Key: "swrescue" as an integer.
RESCUE_LOCK_ID: Final = 0x7377726573637565
TRY_RESCUE_LOCK: Final = "SELECT pg_try_advisory_xact_lock($1)"

# Returns up to $1 jobs whose lease expired (their worker died or stopped heartbeating) to the
# queue, attempt counted (dead if it was the last). Walks the lease index of running jobs; SKIP
# LOCKED passes over a row whose worker is completing it right now: that worker still holds it.
RESCUE_EXPIRED_JOBS: Final = """
WITH expired AS MATERIALIZED (
    SELECT id
    FROM job
    WHERE state = 'running' AND locked_until < now()
    ORDER BY locked_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
rescued AS (
    UPDATE job
    SET state = CASE WHEN job.attempts >= job.max_attempts THEN 'dead' ELSE 'queued' END,
        run_at = now(),
        last_error = 'lease expired: worker ' || coalesce(job.locked_by, '?')
                     || ' stopped heartbeating during attempt ' || job.attempts,
        locked_by = NULL, locked_until = NULL, lease_token = NULL, updated_at = now()
    FROM expired
    WHERE job.id = expired.id
    RETURNING job.id, job.kind, job.state, job.attempts
),
wake AS (SELECT pg_notify('switchyard_job', '') FROM rescued WHERE state = 'queued' LIMIT 1)
SELECT rescued.id, rescued.kind, rescued.state, rescued.attempts
FROM rescued LEFT JOIN wake ON true
"""

_JOB_COLUMNS = """id, kind, payload::text AS payload, state, priority, run_at, attempts, max_attempts,
       locked_by, locked_until, last_error, unique_key, created_at, updated_at"""

# One job by id, for operators. No locks.
GET_JOB: Final = f"SELECT {_JOB_COLUMNS} FROM job WHERE id = $1"  # noqa: S608 - a constant

# Dead jobs, most recently dead first, keyset-paginated after ($2, $3) when given; served by
# the partial index job_dead_idx (updated_at DESC, id). No locks.
LIST_DEAD_JOBS: Final = f"""
SELECT {_JOB_COLUMNS}
FROM job
WHERE state = 'dead'
  AND ($2::timestamptz IS NULL OR updated_at < $2 OR (updated_at = $2 AND id > $3))
ORDER BY updated_at DESC, id
LIMIT $1
"""  # noqa: S608 - only the constant column list is interpolated

# Gives a dead job $2 more attempts and queues it now. Attempts are never reset (they are the
# job's history); max_attempts grows instead. Row-locks the job for the update; the partial
# unique index refuses it if a live job already holds its unique_key.
REQUEUE_DEAD_JOB: Final = f"""
WITH requeued AS (
    UPDATE job
    SET state = 'queued', run_at = now(), max_attempts = attempts + $2, updated_at = now()
    WHERE id = $1 AND state = 'dead'
    RETURNING {_JOB_COLUMNS}
),
wake AS (SELECT pg_notify('switchyard_job', '') FROM requeued LIMIT 1)
SELECT requeued.* FROM requeued LEFT JOIN wake ON true
"""  # noqa: S608 - only the constant column list is interpolated

# Withdraws a job that has not started; a running one is left to finish (its handler decides).
CANCEL_JOB: Final = """
UPDATE job SET state = 'cancelled', updated_at = now()
WHERE id = $1 AND state = 'queued'
RETURNING id
"""

# Withdraws every queued job whose unique_key starts with a prefix (all step jobs of one
# cancelled or failed execution: `step:<execution id>:`). Deleted rather than marked, so the
# hot table stays small; running ones are left to finish and find their execution over. A
# sequential scan: rare, and the table holds only live work.
DELETE_QUEUED_JOBS_BY_KEY_PREFIX: Final = """
DELETE FROM job
WHERE state = 'queued' AND unique_key LIKE replace(replace($1, '%', '\\%'), '_', '\\_') || '%'
"""

# Withdraws the queued job of one unique_key (a wait's timeout once something else resumed
# it), by the unique index job_unique_live_key. A running one is left to finish.
DELETE_QUEUED_JOB_BY_KEY: Final = """
DELETE FROM job
WHERE unique_key = $1 AND state = 'queued'
"""

# Jobs per kind and state, and how long the oldest due queued job has waited. A sequential
# scan of a table kept small by deleting finished jobs; no locks.
QUEUE_DEPTH: Final = """
SELECT kind, state, count(*) AS count,
       EXTRACT(EPOCH FROM now() - min(run_at) FILTER (WHERE state = 'queued' AND run_at <= now()))
           ::float8 AS oldest_due_seconds
FROM job
GROUP BY kind, state
ORDER BY kind, state
"""

# Retention: deletes at most $2 finished (withdrawn or dead) jobs last changed before $1, oldest
# first; returns the count in the command tag. Walks no index on purpose: the table holds only
# live work and such leftovers.
PRUNE_JOBS: Final = """
WITH doomed AS (
  SELECT id FROM job
  WHERE state IN ('dead', 'cancelled', 'succeeded', 'failed') AND updated_at < $1
  ORDER BY updated_at LIMIT $2
)
DELETE FROM job j USING doomed WHERE j.id = doomed.id
"""
