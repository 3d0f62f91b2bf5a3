"""Housekeeping SQL: retention pruning, repairing database-change triggers, failing dead steps.

Pruning deletes finished executions (their step executions go with them; tasks keep their
rows with the execution link cleared), trigger events and withdrawn or dead jobs older than the
retention age, a bounded batch per statement so no transaction holds many locks or bloats the
WAL at once. Unfinished executions are never pruned, whatever their age. Repair re-installs the
capture trigger of a registered database source whose table lost it (dropped and re-created),
so a source never goes quiet without anyone noticing.
"""

from __future__ import annotations

import json
import uuid
from typing import Final

import msgspec

from server.db.database_triggers import (
    DatabaseTriggerConfig,
    install_trigger,
    qualified,
    trigger_name,
)
from server.db.executions import FINISHED_EXECUTION, lock_execution
from server.db.runs import fail_execution
from server.queue.client import Connection

PRUNE_BATCH: Final = 1000

# Each statement deletes at most $2 rows older than $1 (a timestamptz) and returns the count.
PRUNE_EXECUTIONS: Final = """
WITH doomed AS (
  SELECT id FROM workflow_execution
  WHERE finished_at < $1 AND status IN ('SUCCESS', 'FAILED', 'CANCELLED')
  ORDER BY finished_at LIMIT $2
)
DELETE FROM workflow_execution e USING doomed WHERE e.id = doomed.id
"""
PRUNE_EVENTS: Final = """
WITH doomed AS (
  SELECT ev.id FROM trigger_event ev
  WHERE ev.received_at < $1 AND ev.outcome <> 'pending'
    AND NOT EXISTS (SELECT 1 FROM workflow_execution ex WHERE ex.trigger_event_id = ev.id)
  ORDER BY ev.received_at LIMIT $2
)
DELETE FROM trigger_event t USING doomed WHERE t.id = doomed.id
"""
PRUNE_JOBS: Final = """
WITH doomed AS (
  SELECT id FROM job
  WHERE state IN ('dead', 'cancelled', 'succeeded', 'failed') AND updated_at < $1
  ORDER BY updated_at LIMIT $2
)
DELETE FROM job j USING doomed WHERE j.id = doomed.id
"""
PRUNE_STATEMENTS: Final = {
    "executions": PRUNE_EXECUTIONS,
    "events": PRUNE_EVENTS,
    "jobs": PRUNE_JOBS,
}

DATABASE_SOURCES: Final = "SELECT trigger_key, config::text AS config FROM workflow_trigger_registry WHERE type = 'database'"
TRIGGER_PRESENT: Final = """
SELECT EXISTS (
  SELECT 1 FROM pg_trigger
  WHERE tgname = $1 AND tgrelid = to_regclass(format('%I.%I', $2::text, $3::text))
)
"""


# Step jobs that died outside their handler (the rescuer or a shutdown gave up on their last
# attempt, or the worker's job timeout cancelled them) while their execution still runs: without
# this sweep such an execution would wait forever for a step that will never report.
DEAD_STEP_JOBS: Final = """
SELECT j.payload->>'execution_id' AS execution_id, j.payload->>'step_key' AS step_key,
       coalesce(j.last_error, 'unknown error') AS last_error
FROM job j
JOIN workflow_execution e ON e.id = (j.payload->>'execution_id')::uuid
WHERE j.kind = 'workflow_step' AND j.state = 'dead'
  AND e.status NOT IN ('SUCCESS', 'FAILED', 'CANCELLED')
LIMIT 100
"""
FAIL_DEAD_STEP: Final = """
UPDATE step_execution SET status = 'FAILED', error = $3, finished_at = now()
WHERE execution_id = $1 AND step_key = $2 AND status IN ('PENDING', 'RUNNING', 'WAITING')
"""


async def fail_dead_steps(connection: Connection) -> int:
    """Fail the executions whose step job died outside its handler; returns how many."""
    failed = 0
    for row in await connection.fetch(DEAD_STEP_JOBS):
        execution_id = uuid.UUID(row["execution_id"])
        error = f"step {row['step_key']!r} could not run: {row['last_error']}"[:2000]
        async with connection.transaction():
            execution = await lock_execution(connection, execution_id)
            if execution is None or execution.status in FINISHED_EXECUTION:
                continue
            await connection.execute(FAIL_DEAD_STEP, execution_id, row["step_key"], error)
            await fail_execution(connection, execution_id, error)
            failed += 1
    return failed


async def prune_batch(connection: Connection, what: str, older_than: object) -> int:
    """Delete one batch of `what` (executions, events, jobs); returns how many rows went."""
    status = await connection.execute(PRUNE_STATEMENTS[what], older_than, PRUNE_BATCH)
    return int(status.split()[-1])


async def repair_database_triggers(
    connection: Connection, allowed_tables: tuple[str, ...]
) -> tuple[list[str], dict[str, str]]:
    """Re-install missing capture triggers; returns (repaired keys, {key: why not})."""
    repaired: list[str] = []
    problems: dict[str, str] = {}
    for row in await connection.fetch(DATABASE_SOURCES):
        key = row["trigger_key"]
        config = msgspec.convert(json.loads(row["config"]), DatabaseTriggerConfig)
        schema, table = qualified(config.table)
        if await connection.fetchval(TRIGGER_PRESENT, trigger_name(key), schema, table):
            continue
        try:
            async with connection.transaction():
                await install_trigger(connection, key, config, allowed_tables)
        except Exception as error:  # noqa: BLE001 - reported per source; the others still repair
            problems[key] = f"capture trigger missing and not re-installed: {error}"
            continue
        repaired.append(key)
    return repaired, problems
