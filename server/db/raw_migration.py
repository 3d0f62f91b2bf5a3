"""Raw-SQL Piccolo migrations: a list of statements applied in order, in one transaction.

Piccolo declares only single-column constraints, so keys, partial indexes, storage settings,
views and functions are raw SQL. Each such migration file defines `ID`, `DESCRIPTION` and
`STATEMENTS` and delegates `forwards` here.
"""

from __future__ import annotations

from collections.abc import Sequence

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

from server.db.piccolo_app import APP_NAME


def raw_migration(
    migration_id: str, description: str, statements: Sequence[str]
) -> MigrationManager:
    """A migration manager that runs `statements` (Piccolo wraps them in its transaction)."""
    manager = MigrationManager(
        migration_id=migration_id, app_name=APP_NAME, description=description
    )

    async def run() -> None:
        engine = engine_finder()
        if engine is None:
            raise RuntimeError("no Piccolo engine is configured (PICCOLO_CONF)")
        for statement in statements:
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
