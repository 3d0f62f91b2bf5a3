"""Every attempt of a step is kept: `step_execution.attempts_history`, a JSON array.

Each element is one attempt that was retried, as the worker recorded it: `{"attempt",
"status", "error", "started_at", "finished_at", "duration_ms"}`, appended by the statement that
already records a retryable failure (no extra round trip). The last attempt is the step row's
own columns, so a step that succeeds at once writes nothing here; a step has few attempts, so
the array stays small.
"""

from __future__ import annotations

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
