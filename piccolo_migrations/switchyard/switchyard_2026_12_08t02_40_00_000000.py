"""Scoped tokens and the audit log (issue 17).

`api_token.role` (admin, editor, operator, viewer, ingest; existing tokens become admins) and
`api_token.trigger_keys` (an ingest token's allowed trigger keys; NULL allows every key).

`audit_log`: one row per state-changing API call or CLI command (`server.api.audit_trail`,
`server.cli.audit`). It is append-only at the database level: a row trigger refuses every
UPDATE, and every DELETE except the retention prune's; a statement trigger refuses TRUNCATE.
The prune path is the SECURITY DEFINER function `audit_log_prune(cutoff, batch)`: it marks its
own transaction (`switchyard.audit_prune`) before deleting, and the trigger lets a DELETE
through only under that mark and only for rows over a day old. The mark alone is no secret
(any role that can run SQL can set it), so the one-day floor is what makes recent rows
untouchable by the application's connection whatever it sends; a deployment that runs the
application under its own database role adds `REVOKE UPDATE, DELETE, TRUNCATE ON audit_log
FROM <app role>`, and the prune keeps working because the function runs as its owner.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-12-08T02:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "api_token.role and trigger_keys; the append-only audit_log"

STATEMENTS = [
    """
    ALTER TABLE api_token
      ADD COLUMN role text NOT NULL DEFAULT 'admin'
        CONSTRAINT api_token_role_known
        CHECK (role IN ('admin', 'editor', 'operator', 'viewer', 'ingest')),
      ADD COLUMN trigger_keys text[]
    """,
    """
    CREATE TABLE audit_log (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      at timestamptz NOT NULL DEFAULT now(),
      token_id uuid,
      token_name text NOT NULL,
      role text NOT NULL,
      action text NOT NULL,
      target_type text NOT NULL,
      target_id text,
      summary jsonb NOT NULL DEFAULT '{}'::jsonb,
      request_id text,
      source text
    )
    """,
    "CREATE INDEX audit_log_time_idx ON audit_log (at DESC, id DESC)",
    "CREATE INDEX audit_log_target_idx ON audit_log (target_id, at DESC, id DESC)",
    "CREATE INDEX audit_log_token_idx ON audit_log (token_id, at DESC, id DESC)",
    """
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        IF current_setting('switchyard.audit_prune', true) = 'on'
           AND OLD.at < now() - interval '1 day' THEN
          RETURN OLD;
        END IF;
      END IF;
      RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'rows leave only through audit_log_prune(), once past the retention age';
    END
    $$
    """,
    """
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
      FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
    """,
    """
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
      FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()
    """,
    """
    CREATE FUNCTION audit_log_prune(cutoff timestamptz, batch integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    DECLARE
      deleted integer;
    BEGIN
      PERFORM set_config('switchyard.audit_prune', 'on', true);
      DELETE FROM audit_log WHERE id IN (
        SELECT id FROM audit_log
        WHERE at < least(cutoff, now() - interval '1 day')
        ORDER BY at LIMIT batch
      );
      GET DIAGNOSTICS deleted = ROW_COUNT;
      PERFORM set_config('switchyard.audit_prune', 'off', true);
      RETURN deleted;
    END
    $$
    """,
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
