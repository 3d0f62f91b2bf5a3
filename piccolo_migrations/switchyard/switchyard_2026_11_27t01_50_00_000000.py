"""Change notifications for the webhook intake's cache of endpoints and routes.

Every statement that changes a webhook endpoint, a subscription, a workflow definition or a
workflow version notifies the `switchyard_config` channel (delivered when its transaction
commits; the empty payloads of one transaction fold into one notification). API processes
listen on it and drop their cached endpoints and routes (`server.api.hook_cache`), so a change
from any replica or tool applies at once everywhere. Statement-level triggers: one
notification per statement, however many rows it changed.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-11-27T01:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "switchyard_config notifications on intake configuration changes"

TABLES = ("webhook_endpoint", "workflow_subscription", "workflow_definition", "workflow_version")

STATEMENTS = [
    """
    CREATE OR REPLACE FUNCTION switchyard_config_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_notify('switchyard_config', '');
      RETURN NULL;
    END
    $$
    """,
    *(
        f"CREATE TRIGGER {table}_config_changed "
        f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION switchyard_config_changed()"
        for table in TABLES
    ),
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
