"""Room for in-place updates on the engine's hot tables.

Each step row is inserted, then updated once or twice (running, then its result); each
execution row is updated on every step. With the default fillfactor (100) the page holding a
new row is usually full by the time it is updated, so the update writes a new version on
another page and a new entry in every index. Leaving 15% of each page free lets most of those
updates stay on the page (HOT: no index entries; the old version is pruned in place), which
keeps the indexes small under a steady stream of runs. Existing pages keep their layout; new
pages get the room.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-11-27T01:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "fillfactor 85 on step_execution and workflow_execution"

STATEMENTS = [
    "ALTER TABLE step_execution SET (fillfactor = 85)",
    "ALTER TABLE workflow_execution SET (fillfactor = 85)",
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
