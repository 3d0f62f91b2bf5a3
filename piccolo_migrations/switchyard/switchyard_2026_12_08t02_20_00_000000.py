"""Webhook registration (DESIGN §6): `webhook_registration`, the subscription a webhook endpoint
keeps at its sender, owned by `server.db.webhook_registrations`.

- One row per registration: attached to its endpoint (`detached_at` NULL; at most one per
  endpoint, the partial unique index) or detached (the endpoint was deleted or its registration
  replaced) and kept until the scheduler has removed it at the sender: a stale registration.
  `endpoint_id` has no foreign key on purpose: a detached row outlives its endpoint.
- `spec` is the endpoint's `registration` object (no secrets); `wanted` whether it should be
  registered now (endpoint enabled and attached). `generation` counts changes to what should be
  registered (the API bumps it in the change's transaction), `applied_generation` the last one
  the scheduler carried out.
- The sender's side as last seen: `external_id` (the hook or subscription id), `registered_url`
  (the callback URL it was given), `subscription` (an `http` sender's subscribe answer, which
  its unsubscribe and renew templates read), `renewed_at`, `expires_at`.
- The status shown on reads: `state` (pending | registered | failed | removed), `last_error`
  (the sender's error, secrets redacted), `checked_at`.
- Scheduling: `next_check_at` (a change: now; then the periodic check, a renewal or a retry
  after `failures` failures), `claimed_by` / `claimed_at` (the replica reconciling it now, for
  operators), `call_started_at` (set before a call that creates something at the sender and
  cleared when its answer is recorded: a successor waits out a call a killed replica left in
  flight before it looks at the sender).
- `secret_ciphertext` / `secret_key_id`: a detached row's copy of its endpoint's sealed secrets
  (still bound to `endpoint_id`), for an `http` unsubscribe template that reads `secret`.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-12-08T02:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "webhook_registration"

STATEMENTS = [
    """CREATE TABLE webhook_registration (
        id uuid PRIMARY KEY,
        endpoint_id uuid NOT NULL,
        trigger_key text NOT NULL,
        path text NOT NULL,
        provider text NOT NULL,
        spec jsonb NOT NULL,
        wanted boolean NOT NULL,
        detached_at timestamptz,
        generation bigint NOT NULL DEFAULT 1,
        applied_generation bigint NOT NULL DEFAULT 0,
        state text NOT NULL DEFAULT 'pending',
        external_id text,
        registered_url text,
        subscription jsonb,
        last_error text,
        checked_at timestamptz,
        renewed_at timestamptz,
        expires_at timestamptz,
        failures integer NOT NULL DEFAULT 0,
        next_check_at timestamptz NOT NULL DEFAULT now(),
        claimed_by text,
        claimed_at timestamptz,
        call_started_at timestamptz,
        secret_ciphertext bytea,
        secret_key_id text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    # An endpoint has at most one attached registration; reads look it up by endpoint.
    """CREATE UNIQUE INDEX webhook_registration_endpoint ON webhook_registration (endpoint_id)
        WHERE detached_at IS NULL""",
    # The scheduler's due scan and its next wake-up (min).
    "CREATE INDEX webhook_registration_due ON webhook_registration (next_check_at)",
    # The stale list: detached rows, oldest first.
    """CREATE INDEX webhook_registration_stale ON webhook_registration (detached_at, id)
        WHERE detached_at IS NOT NULL""",
]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
