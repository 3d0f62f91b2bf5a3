"""Database-change triggers: the capture function Switchyard installs on watched tables.

`switchyard_capture_change(trigger_key, columns)` runs AFTER each watched row change, in the
changing transaction: it records the change as a `trigger_event` (outcome `pending`) and
enqueues a `trigger_event` job that fans it out to the subscribed workflows. Both commit with
the change itself, or not at all: a rolled-back change leaves no event, and nothing committed
is missed. With `columns`, an UPDATE that changes none of them is ignored.

The function is SECURITY DEFINER (it runs with the rights of Switchyard's role, so another
application writing to the watched table needs no rights on Switchyard's tables) and pins its
search_path to Switchyard's schema, so a caller cannot redirect its inserts. The job row is
written here rather than through `server.queue.sql` because this is PL/pgSQL; it follows the
same contract: state `queued`, a unique key, and a NOTIFY on the queue's channel.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-11-26T22:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "switchyard_capture_change trigger function"

FUNCTION_BODY = r"""
DECLARE
  event_id uuid := gen_random_uuid();
  watched jsonb := coalesce(TG_ARGV[1], '[]')::jsonb;
  old_row jsonb := CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END;
  new_row jsonb := CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END;
  table_name text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
BEGIN
  IF TG_OP = 'UPDATE' AND jsonb_array_length(watched) > 0 AND NOT EXISTS (
    SELECT 1 FROM jsonb_array_elements_text(watched) AS c(name)
    WHERE old_row -> c.name IS DISTINCT FROM new_row -> c.name
  ) THEN
    RETURN NULL;
  END IF;
  INSERT INTO trigger_event (id, trigger_key, trigger_type, payload, source, outcome)
  VALUES (
    event_id, TG_ARGV[0], 'database',
    jsonb_build_object('operation', TG_OP, 'table', table_name, 'old', old_row, 'new', new_row),
    jsonb_build_object('table', table_name, 'transaction', txid_current()),
    'pending'
  );
  INSERT INTO job (kind, payload, unique_key)
  VALUES ('trigger_event', jsonb_build_object('event_id', event_id), 'event:' || event_id);
  PERFORM pg_notify('switchyard_job', '');
  RETURN NULL;
END
"""

# Built with format() so the schema name is quoted by PostgreSQL itself.
STATEMENTS = [
    f"""
    DO $outer$
    BEGIN
      EXECUTE format(
        'CREATE OR REPLACE FUNCTION switchyard_capture_change() RETURNS trigger '
        'LANGUAGE plpgsql SECURITY DEFINER SET search_path = %I, pg_temp AS %L',
        current_schema(), $body${FUNCTION_BODY}$body$
      );
    END
    $outer$
    """,
    "REVOKE ALL ON FUNCTION switchyard_capture_change() FROM PUBLIC",
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
