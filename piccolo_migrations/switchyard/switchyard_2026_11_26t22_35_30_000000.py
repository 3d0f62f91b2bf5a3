"""Execution engine: steps of an execution in planning order.

No index serves cancelling an execution's queued jobs by unique_key prefix: cancellation is
rare and the job table small, while every index on it slows each enqueue.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-26T22:35:30:000000"
VERSION = "1.38.0"
DESCRIPTION = "step_execution order index"

STATEMENTS = [
    # Steps of one execution in the order they were planned (GET /executions/{id}).
    "CREATE INDEX step_execution_order_idx ON step_execution (execution_id, created_at, id)",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="switchyard", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        for statement in STATEMENTS:
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
