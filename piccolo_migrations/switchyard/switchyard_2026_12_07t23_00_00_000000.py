"""Flow constructs (DESIGN §5.1): child executions, waits, workflow options, schedule overlap.

- `workflow_execution`: a child records its parent (`parent_execution_id`, `parent_step_key`)
  and the parent step's run (`parent_step_run`: that `step_execution` row's id, so a retried
  foreach starts new children) with its `item_index`; unique per (step run, item), so a child
  is started once whatever a worker does. `held`: PENDING, not started yet (no entry step, no
  job): a foreach item over `max_concurrency`, or an execution over its workflow's concurrency
  limit; admitted later in order. `concurrency_key` (the rendered `concurrency.key`) and
  `overlap_key` (`schedule:<id>` for a schedule with `overlap` other than `allow`) name the
  groups an execution counts in.
- `workflow_version.options`: the document's `on_failure` and `concurrency` (also in the
  `workflow_latest_json` view's documents).
- `trigger_event.correlation_key`: what a `wait_for_event` step waits for.
- `step_execution.wait_key`: the (trigger key, correlation key) a WAITING `wait_for_event` step
  waits for, as JSON text; partial index so an event finds its waiters by key.
- `schedule_trigger.overlap`: `allow` | `skip` | `buffer_one`.
- The trigger `workflow_execution_ended`: when an execution that is a child, counts in a
  group or FAILED reaches a final status, it enqueues one `execution_ended` job in the same
  transaction (whatever path ended it: a step, a cancel, a failure, the dead-job sweep), whose
  handler resumes the parent's waiting step, admits the next held executions and starts the
  failure workflow. Other executions pay only the trigger's WHEN test.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-12-07T23:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "flow constructs: child executions, waits, options, overlap"

_UNFINISHED = "('PENDING', 'RUNNING', 'WAITING')"
_FINISHED = "('CANCELLED', 'FAILED', 'SUCCESS')"

STATEMENTS = [
    """ALTER TABLE workflow_execution
        ADD COLUMN parent_execution_id uuid,
        ADD COLUMN parent_step_key text,
        ADD COLUMN parent_step_run uuid,
        ADD COLUMN item_index integer,
        ADD COLUMN held boolean NOT NULL DEFAULT false,
        ADD COLUMN concurrency_key text,
        ADD COLUMN overlap_key text""",
    # GET /executions?parent_id= (newest first, as every execution list) and the cancel cascade.
    """CREATE INDEX workflow_execution_parent ON workflow_execution
        (parent_execution_id, created_at DESC, id DESC) WHERE parent_execution_id IS NOT NULL""",
    # One child per (parent step run, item): ON CONFLICT DO NOTHING makes starts idempotent.
    """CREATE UNIQUE INDEX workflow_execution_child_item ON workflow_execution
        (parent_step_run, item_index) WHERE parent_step_run IS NOT NULL""",
    # A foreach's started, unfinished children (at most max_concurrency entries per step run).
    f"""CREATE INDEX workflow_execution_child_running ON workflow_execution (parent_step_run)
        WHERE parent_step_run IS NOT NULL AND NOT held AND status IN {_UNFINISHED}""",
    # Held executions in admission order: a foreach's items, a concurrency group's arrivals.
    """CREATE INDEX workflow_execution_held_child ON workflow_execution
        (parent_step_run, item_index) WHERE held AND parent_step_run IS NOT NULL""",
    f"""CREATE INDEX workflow_execution_concurrency ON workflow_execution
        (workflow_id, concurrency_key, held, created_at, id)
        WHERE concurrency_key IS NOT NULL AND status IN {_UNFINISHED}""",
    f"""CREATE INDEX workflow_execution_overlap ON workflow_execution
        (workflow_id, overlap_key, held, created_at, id)
        WHERE overlap_key IS NOT NULL AND status IN {_UNFINISHED}""",
    "ALTER TABLE workflow_version ADD COLUMN options jsonb NOT NULL DEFAULT '{}'::jsonb",
    # The view's documents carry the workflow options too.
    """
    CREATE OR REPLACE VIEW workflow_latest_json AS
    SELECT d.id AS workflow_id,
           v.id AS version_id,
           v.version_num,
           v.published_at,
           jsonb_build_object(
             'name', d.name,
             'description', d.description,
             'category', d.category,
             'tags', d.tags,
             'variables', COALESCE((
               SELECT jsonb_agg(jsonb_build_object(
                        'key', var.key,
                        'value', CASE WHEN var.secret THEN NULL ELSE var.value END,
                        'secret', var.secret) ORDER BY var.key)
               FROM workflow_variable var WHERE var.workflow_id = d.id), '[]'::jsonb),
             'steps', COALESCE((
               SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                        'key', s.step_key,
                        'name', NULLIF(s.name, ''),
                        'kind', s.kind,
                        'action_key', s.action_key,
                        'cfg', s.cfg)) ORDER BY s.position, s.step_key)
               FROM workflow_step s WHERE s.version_id = v.id), '[]'::jsonb),
             'edges', COALESCE((
               SELECT jsonb_agg(jsonb_build_object(
                        'from', f.step_key, 'to', t.step_key, 'branch_key', e.branch_key)
                        ORDER BY f.step_key, t.step_key, e.branch_key)
               FROM workflow_edge e
               JOIN workflow_step f ON f.id = e.from_step_id
               JOIN workflow_step t ON t.id = e.to_step_id
               WHERE e.version_id = v.id), '[]'::jsonb),
             'subscriptions', COALESCE((
               SELECT jsonb_agg(jsonb_build_object(
                        'trigger_key', sub.trigger_key,
                        'filter_conditions', sub.filter_conditions)
                        ORDER BY sub.trigger_key, sub.created_at, sub.id)
               FROM workflow_subscription sub
               WHERE sub.workflow_id = d.id AND sub.is_active), '[]'::jsonb),
             'on_failure', v.options->'on_failure',
             'concurrency', v.options->'concurrency'
           ) AS document
    FROM workflow_definition d
    JOIN LATERAL (
      SELECT wv.id, wv.version_num, wv.published_at, wv.options
      FROM workflow_version wv
      WHERE wv.workflow_id = d.id AND wv.status = 'published'
      ORDER BY wv.version_num DESC
      LIMIT 1
    ) v ON true
    """,
    "ALTER TABLE trigger_event ADD COLUMN correlation_key text",
    """CREATE INDEX trigger_event_correlation ON trigger_event
        (trigger_key, correlation_key, received_at) WHERE correlation_key IS NOT NULL""",
    "ALTER TABLE step_execution ADD COLUMN wait_key text",
    """CREATE INDEX step_execution_waiting ON step_execution (wait_key)
        WHERE wait_key IS NOT NULL AND status = 'WAITING'""",
    "ALTER TABLE schedule_trigger ADD COLUMN overlap text NOT NULL DEFAULT 'allow'",
    """CREATE FUNCTION switchyard_execution_ended() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO job (kind, payload, max_attempts)
        VALUES ('execution_ended',
                jsonb_build_object('execution_id', NEW.id, 'status', NEW.status,
                                   'parent_execution_id', NEW.parent_execution_id,
                                   'parent_step_run', NEW.parent_step_run,
                                   'grouped', NEW.concurrency_key IS NOT NULL
                                              OR NEW.overlap_key IS NOT NULL), 25);
        PERFORM pg_notify('switchyard_job', '');
        RETURN NULL;
    END $$""",
    f"""CREATE TRIGGER workflow_execution_ended AFTER UPDATE OF status ON workflow_execution
    FOR EACH ROW WHEN (NEW.status IN {_FINISHED} AND OLD.status NOT IN {_FINISHED}
                       AND (NEW.parent_execution_id IS NOT NULL OR NEW.status = 'FAILED'
                            OR NEW.concurrency_key IS NOT NULL OR NEW.overlap_key IS NOT NULL))
    EXECUTE FUNCTION switchyard_execution_ended()""",
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
