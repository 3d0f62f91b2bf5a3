"""Trigger health: per trigger key, when it last fired and what became of its events."""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-11-26T22:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "trigger_health"

STATEMENTS = [
    # One row per trigger key, upserted after each intake (outside the intake transaction, so
    # a busy trigger's counters never hold up its events). Refusals (bad signatures, unknown
    # keys) are counted here too: they never become events.
    """
    CREATE TABLE trigger_health (
      trigger_key varchar(200) PRIMARY KEY,
      last_event_at timestamptz,
      accepted bigint NOT NULL DEFAULT 0,
      deduplicated bigint NOT NULL DEFAULT 0,
      filtered bigint NOT NULL DEFAULT 0,
      no_match bigint NOT NULL DEFAULT 0,
      refused bigint NOT NULL DEFAULT 0,
      last_error text,
      last_error_at timestamptz,
      updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
