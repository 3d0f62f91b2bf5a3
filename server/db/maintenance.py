"""Housekeeping SQL: retention pruning and repairing database-change triggers.

Pruning deletes finished executions (their step executions go with them; tasks keep their
rows with the execution link cleared), trigger events, withdrawn or dead jobs and audit log
entries (through `audit_log_prune`, the one path the append-only table lets rows leave by:
`server.db.audit`) older than the retention age, a bounded batch per statement so no transaction holds many locks or bloats the
WAL at once. Unfinished executions are never pruned, whatever their age. Repair re-installs the
capture trigger of a registered database source whose table lost it (dropped and re-created),
so a source never goes quiet without anyone noticing.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Final

import msgspec

from server.db.audit import PRUNE_AUDIT_LOG, prune_audit_log
from server.db.database_triggers import (
    DatabaseTriggerConfig,
    install_trigger,
    qualified,
    trigger_name,
)
from server.engine.planning import FINISHED_EXECUTION_SQL
from server.queue.client import Connection
from server.queue.sql import PRUNE_JOBS

PRUNE_BATCH: Final = 1000

# Each statement deletes at most $2 rows older than $1 (a timestamptz) and returns the count.
PRUNE_EXECUTIONS: Final = f"""
WITH doomed AS (
  SELECT id FROM workflow_execution
  WHERE finished_at < $1 AND status IN {FINISHED_EXECUTION_SQL}
  ORDER BY finished_at LIMIT $2
)
DELETE FROM workflow_execution e USING doomed WHERE e.id = doomed.id
"""  # noqa: S608 - constant SQL only
PRUNE_EVENTS: Final = """
WITH doomed AS (
  SELECT ev.id FROM trigger_event ev
  WHERE ev.received_at < $1 AND ev.outcome <> 'pending'
    AND NOT EXISTS (SELECT 1 FROM workflow_execution ex WHERE ex.trigger_event_id = ev.id)
  ORDER BY ev.received_at LIMIT $2
)
DELETE FROM trigger_event t USING doomed WHERE t.id = doomed.id
"""
PRUNE_STATEMENTS: Final = {
    "executions": PRUNE_EXECUTIONS,
    "events": PRUNE_EVENTS,
    "jobs": PRUNE_JOBS,
    "audit": PRUNE_AUDIT_LOG,
}

DATABASE_SOURCES: Final = "SELECT trigger_key, config::text AS config FROM workflow_trigger_registry WHERE type = 'database'"
TRIGGER_PRESENT: Final = """
SELECT EXISTS (
  SELECT 1 FROM pg_trigger
  WHERE tgname = $1 AND tgrelid = to_regclass(format('%I.%I', $2::text, $3::text))
)
"""


async def prune_batch(connection: Connection, what: str, older_than: dt.datetime) -> int:
    """Delete one batch of `what` (executions, events, jobs, audit); returns how many rows
    went."""
    if what == "audit":  # a function answering its count, not a DELETE statement
        return await prune_audit_log(connection, older_than, PRUNE_BATCH)
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
