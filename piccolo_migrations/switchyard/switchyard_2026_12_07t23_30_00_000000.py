"""Concurrency limits and schedule overlap (DESIGN §5.1): events whose every execution was
skipped are counted in trigger health (`trigger_health.skipped`), beside accepted, filtered,
no_match, deduplicated and refused. The groups' columns and indexes came with the flow
constructs (2026-12-07T23:00:00)."""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-12-07T23:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "trigger_health.skipped"

STATEMENTS = ["ALTER TABLE trigger_health ADD COLUMN skipped bigint NOT NULL DEFAULT 0"]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
