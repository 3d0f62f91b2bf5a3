"""API tokens an administrator can manage: an optional expiry.

`expires_at` (NULL: never) is checked with `revoked_at` on every request; `last_used_at`
already exists and is now kept (written at most once a minute per token). The partial index
serves the list of tokens newest first.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-12-07T18:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "api_token.expires_at"

STATEMENTS = [
    "ALTER TABLE api_token ADD COLUMN expires_at timestamptz",
    "CREATE INDEX api_token_created_at ON api_token (created_at DESC, id DESC)",
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
