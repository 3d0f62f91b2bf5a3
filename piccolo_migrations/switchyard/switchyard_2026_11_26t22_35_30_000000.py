"""Execution engine: steps of an execution in planning order.

No index serves cancelling an execution's queued jobs by unique_key prefix: cancellation is
rare and the job table small, while every index on it slows each enqueue.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-11-26T22:35:30:000000"
VERSION = "1.38.0"
DESCRIPTION = "step_execution order index"

STATEMENTS = [
    # Steps of one execution in the order they were planned (GET /executions/{id}).
    "CREATE INDEX step_execution_order_idx ON step_execution (execution_id, created_at, id)",
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
