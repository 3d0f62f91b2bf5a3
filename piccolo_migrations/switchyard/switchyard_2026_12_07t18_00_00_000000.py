"""Every attempt of a step is kept: `step_execution.attempts_history`, a JSON array.

Each element is one attempt as the worker recorded it: `{"attempt", "status", "error",
"started_at", "finished_at", "duration_ms"}`. The statements that already record a step's
result (or a retryable failure) append to it, so keeping the history costs no extra round
trip; a step has few attempts, so the array stays small.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-12-07T18:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "step_execution.attempts_history: every attempt of a step"

STATEMENTS = [
    "ALTER TABLE step_execution ADD COLUMN attempts_history jsonb NOT NULL DEFAULT '[]'::jsonb",
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
