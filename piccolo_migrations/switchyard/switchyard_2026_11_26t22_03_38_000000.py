"""API tokens made by `switchyard create-token`: only a SHA-256 of each token is stored."""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-11-26T22:03:38:000000"
VERSION = "1.38.0"
DESCRIPTION = "api_token"

STATEMENTS = [
    """
    CREATE TABLE api_token (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      name varchar(200) NOT NULL DEFAULT '',
      token_hash char(64) NOT NULL UNIQUE,
      created_at timestamptz NOT NULL DEFAULT now(),
      last_used_at timestamptz,
      revoked_at timestamptz
    )
    """,
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
