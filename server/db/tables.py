"""The 17 Piccolo tables of Switchyard's schema (DESIGN §2).

Column names follow the seed (`version_num`, `s3_key`, `action_key`, `cfg`, `trigger_key`, ...).
Design-time rows use UUID keys (they appear in URLs and documents); the queue's `job` uses a
bigint identity because it is hot and ordered. Composite unique keys, multi-column and partial
indexes, storage parameters and the `workflow_latest_json` view are raw SQL in the migrations,
since Piccolo cannot declare them; each is commented there. Rows never leave `server.db`:
repositories turn them into structs.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    Array,
    BigInt,
    Boolean,
    Bytea,
    DoublePrecision,
    ForeignKey,
    Integer,
    SmallInt,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

# -- design time -------------------------------------------------------------------------------


class WorkflowDefinition(Table, tablename="workflow_definition"):
    id = UUID(primary_key=True)
    name = Varchar(length=200)
    description = Text(default="")
    category = Varchar(length=100, default="")
    tags = JSONB(default=[])
    is_active = Boolean(default=True)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class WorkflowVersion(Table, tablename="workflow_version"):
    id = UUID(primary_key=True)
    workflow_id = ForeignKey(WorkflowDefinition, on_delete=OnDelete.cascade, null=False)
    version_num = Integer()
    status = Varchar(length=20, default="draft")  # draft | published
    s3_key = Varchar(length=500, null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    published_at = Timestamptz(null=True, default=None)
    # The document's workflow options: {"on_failure"?, "concurrency"?} (2026-12-07T23:00:00).
    options = JSONB(default={})


class WorkflowStep(Table, tablename="workflow_step"):
    id = UUID(primary_key=True)
    version_id = ForeignKey(WorkflowVersion, on_delete=OnDelete.cascade, null=False)
    step_key = Varchar(length=100)
    name = Varchar(length=200, default="")
    kind = Varchar(length=20)  # action | condition | delay
    action_key = Varchar(length=100, null=True, default=None)
    cfg = JSONB(default={})
    position = Integer(default=0)


class WorkflowEdge(Table, tablename="workflow_edge"):
    id = UUID(primary_key=True)
    version_id = ForeignKey(WorkflowVersion, on_delete=OnDelete.cascade, null=False)
    from_step_id = ForeignKey(WorkflowStep, on_delete=OnDelete.cascade, null=False)
    to_step_id = ForeignKey(WorkflowStep, on_delete=OnDelete.cascade, null=False)
    branch_key = Varchar(length=100, default="default")


class WorkflowVariable(Table, tablename="workflow_variable"):
    id = UUID(primary_key=True)
    workflow_id = ForeignKey(WorkflowDefinition, on_delete=OnDelete.cascade, null=False)
    key = Varchar(length=100)
    value = JSONB(null=True, default=None)  # plain values only; NULL when secret
    secret = Boolean(default=False)
    ciphertext = Bytea(null=True, default=None)  # AES-256-GCM, row id as associated data
    key_id = Varchar(length=64, null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class WorkflowSubscription(Table, tablename="workflow_subscription"):
    id = UUID(primary_key=True)
    workflow_id = ForeignKey(WorkflowDefinition, on_delete=OnDelete.cascade, null=False)
    trigger_key = Varchar(length=200, index=True)
    filter_conditions = JSONB(default={})
    is_active = Boolean(default=True)
    created_at = Timestamptz(default=TimestamptzNow())


class WebhookEndpoint(Table, tablename="webhook_endpoint"):
    id = UUID(primary_key=True)
    trigger_key = Varchar(length=200, index=True)
    path = Varchar(length=200, unique=True)
    auth_type = Varchar(length=20, default="none")  # none | header_token | hmac_sha256 | github
    auth_config = JSONB(default={})  # non-secret auth settings, e.g. the header name
    secret_ciphertext = Bytea(null=True, default=None)
    secret_key_id = Varchar(length=64, null=True, default=None)
    response_mode = Varchar(length=10, default="async")  # async | sync
    enabled = Boolean(default=True)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class ScheduleTrigger(Table, tablename="schedule_trigger"):
    id = UUID(primary_key=True)
    trigger_key = Varchar(length=200, index=True)
    cron = Varchar(length=200)
    timezone = Varchar(length=64, default="UTC")
    payload = JSONB(default={})
    enabled = Boolean(default=True)
    misfire_policy = Varchar(length=20, default="run_once")  # skip | run_once
    overlap = Text(default="allow")  # allow | skip | buffer_one (2026-12-07T23:00:00)
    last_fire_at = Timestamptz(null=True, default=None)
    next_fire_at = Timestamptz(null=True, default=None)
    last_error = Text(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


# -- registries and credentials ----------------------------------------------------------------


class WorkflowActionRegistry(Table, tablename="workflow_action_registry"):
    action_key = Varchar(length=100, primary_key=True)
    name = Varchar(length=200)
    description = Text(default="")
    cfg_schema = JSONB(default={})  # JSON schema of the step's cfg
    credential_type = Varchar(length=100, null=True, default=None)
    is_builtin = Boolean(default=True)
    updated_at = Timestamptz(default=TimestamptzNow())


class WorkflowTriggerRegistry(Table, tablename="workflow_trigger_registry"):
    trigger_key = Varchar(length=200, primary_key=True)
    type = Varchar(length=20)  # webhook | schedule | database | event | manual
    description = Text(default="")
    config = JSONB(default={})
    is_builtin = Boolean(default=False)
    created_at = Timestamptz(default=TimestamptzNow())


class CredentialType(Table, tablename="credential_type"):
    type_key = Varchar(length=100, primary_key=True)
    name = Varchar(length=200)
    description = Text(default="")
    fields_schema = JSONB(default={})  # JSON schema the credential's data must satisfy
    updated_at = Timestamptz(default=TimestamptzNow())


class UserCredentials(Table, tablename="user_credentials"):
    id = UUID(primary_key=True)
    name = Varchar(length=200, unique=True)
    credential_type = ForeignKey(CredentialType, on_delete=OnDelete.restrict, null=False)
    ciphertext = Bytea()  # the whole data object, AES-256-GCM, row id as associated data
    key_id = Varchar(length=64)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


# -- runtime -----------------------------------------------------------------------------------


class TriggerEvent(Table, tablename="trigger_event"):
    id = UUID(primary_key=True)
    trigger_key = Varchar(length=200)
    trigger_type = Varchar(length=20)
    payload = JSONB(default={})
    idempotency_key = Varchar(length=300, null=True, default=None)
    source = JSONB(default={})  # where it came from: webhook id, schedule id and fire time, ...
    outcome = Varchar(length=20, default="accepted")  # accepted | no_match | filtered | skipped
    outcome_detail = Text(null=True, default=None)
    received_at = Timestamptz(default=TimestamptzNow())
    correlation_key = Text(null=True, default=None)  # for wait_for_event steps


class WorkflowExecution(Table, tablename="workflow_execution"):
    id = UUID(primary_key=True)
    workflow_id = ForeignKey(WorkflowDefinition, on_delete=OnDelete.cascade, null=False)
    version_id = ForeignKey(WorkflowVersion, on_delete=OnDelete.restrict, null=False)
    status = Varchar(length=20, default="PENDING")
    context_data = JSONB(default={})
    trigger_event_id = ForeignKey(TriggerEvent, on_delete=OnDelete.set_null, null=True)
    trigger_type = Varchar(length=20, default="manual")
    error = Text(null=True, default=None)
    steps_run = Integer(default=0)
    created_at = Timestamptz(default=TimestamptzNow())
    started_at = Timestamptz(null=True, default=None)
    finished_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz(default=TimestamptzNow())
    # Flow constructs (raw migration 2026-12-07T23:00:00): a child's parent and item; `held`
    # (PENDING, not started: over a foreach's or the workflow's concurrency); the groups.
    parent_execution_id = UUID(null=True, default=None)
    parent_step_key = Text(null=True, default=None)
    parent_step_run = UUID(null=True, default=None)
    item_index = Integer(null=True, default=None)
    held = Boolean(default=False)
    concurrency_key = Text(null=True, default=None)
    overlap_key = Text(null=True, default=None)
    # The W3C traceparent its steps' spans continue (raw migration 2026-12-08T02:50:00;
    # server.tracing); NULL when tracing was off at its start.
    traceparent = Text(null=True, default=None)


class StepExecution(Table, tablename="step_execution"):
    id = UUID(primary_key=True)
    execution_id = ForeignKey(WorkflowExecution, on_delete=OnDelete.cascade, null=False)
    step_id = ForeignKey(WorkflowStep, on_delete=OnDelete.restrict, null=False)
    step_key = Varchar(length=100)
    status = Varchar(length=20, default="PENDING")
    input_data = JSONB(null=True, default=None)  # rendered cfg, secrets redacted
    result_data = JSONB(null=True, default=None)
    error = Text(null=True, default=None)
    attempts = Integer(default=0)
    execution_time = DoublePrecision(null=True, default=None)  # milliseconds
    # The retried attempts: {attempt, status, error, started_at, finished_at, duration_ms}
    # (the last attempt is this row); added by a raw migration (2026-12-07T18:00:00).
    attempts_history = JSONB(default=[])
    branches = Array(Varchar(length=100), default=list)  # branch keys taken; see engine.planning
    wait_key = Text(null=True, default=None)  # a waiting wait_for_event step's (trigger, key)
    created_at = Timestamptz(default=TimestamptzNow())
    started_at = Timestamptz(null=True, default=None)
    finished_at = Timestamptz(null=True, default=None)


class Tasks(Table, tablename="tasks"):
    id = UUID(primary_key=True)
    title = Varchar(length=500)
    description = Text(default="")
    status = Varchar(length=20, default="open")  # open | in_progress | done | cancelled
    assignee = Varchar(length=200, null=True, default=None)
    due_date = Timestamptz(null=True, default=None)
    execution_id = ForeignKey(WorkflowExecution, on_delete=OnDelete.set_null, null=True)
    step_execution_id = ForeignKey(StepExecution, on_delete=OnDelete.set_null, null=True)
    idempotency_key = Varchar(length=200, null=True, default=None, unique=True)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class Job(Table, tablename="job"):
    """The queue. All runtime SQL against it lives in `server.queue.sql`."""

    id = BigInt(primary_key=True)  # identity, see the migration
    kind = Varchar(length=100)
    payload = JSONB(default={})
    state = Varchar(length=20, default="queued")
    priority = SmallInt(default=0)
    run_at = Timestamptz(default=TimestamptzNow())
    attempts = Integer(default=0)
    max_attempts = Integer(default=5)
    locked_by = Varchar(length=200, null=True, default=None)
    locked_until = Timestamptz(null=True, default=None)
    lease_token = UUID(null=True, default=None)
    last_error = Text(null=True, default=None)
    unique_key = Varchar(length=300, null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


TABLES: list[type[Table]] = [
    WorkflowDefinition,
    WorkflowVersion,
    WorkflowStep,
    WorkflowEdge,
    WorkflowVariable,
    WorkflowSubscription,
    WebhookEndpoint,
    ScheduleTrigger,
    WorkflowActionRegistry,
    WorkflowTriggerRegistry,
    CredentialType,
    UserCredentials,
    TriggerEvent,
    WorkflowExecution,
    StepExecution,
    Tasks,
    Job,
]
"""The 17 tables of DESIGN §2 (ApiToken, below, is created by a raw migration)."""


class ApiToken(Table, tablename="api_token"):
    """Bearer tokens made by `switchyard create-token`; only their SHA-256 is kept."""

    id = UUID(primary_key=True)
    name = Varchar(length=200, default="")
    token_hash = Varchar(length=64, unique=True)
    created_at = Timestamptz(default=TimestamptzNow())
    last_used_at = Timestamptz(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)
    expires_at = Timestamptz(null=True, default=None)
    # admin | editor | operator | viewer | ingest (server.access; 2026-12-08T02:40:00)
    role = Text(default="admin")
    trigger_keys = Array(base_column=Text(), null=True, default=None)  # ingest: allowed keys
