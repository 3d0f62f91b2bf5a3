"""Webhook endpoints (table `webhook_endpoint`): a trigger key's public path and its settings.

`auth_config` (JSONB) holds the non-secret settings: `header`, `secret_count` (secrets and
rotation: `server.db.webhook_auth`) and `sync_timeout_seconds`. Creating an endpoint, or moving
it to another trigger key, registers that key as a `webhook` source unless it is registered, in
the same transaction; a key registered with another type is a conflict. Deleting an endpoint
leaves the registry entry, which subscriptions may still name. Paths are unique and
case-sensitive. The hook route reads the endpoint with `find_endpoint` and keeps it per path
until any change notifies (`server.api.hook_cache`), so a new, changed or disabled endpoint
takes effect at once on every API replica. An endpoint's `registration` (the subscription the
scheduler keeps at its sender) is written in the endpoint's own transaction through
`server.db.webhook_registrations`; a change to what the sender is given (enabled, path,
secrets, the registration itself) makes it due at once, and deleting the endpoint detaches it
for removal at the sender.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Any, Final

import asyncpg
import msgspec
from msgspec import Meta
from piccolo.columns import Column

from server.crypto.aead import Keyring, SecretDecryptionError
from server.db.keyset import after_position
from server.db.pool import asyncpg_pool, piccolo_database, transaction
from server.db.tables import WebhookEndpoint, WorkflowTriggerRegistry
from server.db.webhook_auth import (
    AuthInput,
    AuthState,
    AuthView,
    auth_settings,
    next_auth,
    seal_secrets,
    stored_auth,
    view_of,
)
from server.db.webhook_registrations import (
    RegistrationStatus,
    endpoint_registrations,
    registration_changed,
    registration_created,
    registration_detached,
)
from server.errors import ConflictError, NotFoundError, ValidationError
from server.queue.client import Connection
from server.runs.intake import Route, routes_from_json
from server.runs.sql import routes_json
from server.triggers.registration import Registration

DEFAULT_SYNC_TIMEOUT_SECONDS = 10.0
MAX_SYNC_TIMEOUT_SECONDS = 60.0
PATH_PATTERN = r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$"
# /hooks/resume/{token} are the resume links of waiting steps (`server.api.resume_links`).
RESERVED_FIRST_SEGMENT = "resume"

WebhookPath = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        pattern=PATH_PATTERN,
        description="unique; segments of letters, digits, '.', '_', '~', '-' joined by '/'",
    ),
]
SyncTimeout = Annotated[
    float,
    Meta(gt=0, le=MAX_SYNC_TIMEOUT_SECONDS, description="sync mode: seconds to wait (10)"),
]


class ResponseMode(StrEnum):
    ASYNC = "async"
    SYNC = "sync"


class WebhookView(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint as the API shows it: secrets never, only whether there are some."""

    id: uuid.UUID
    trigger_key: str
    path: str
    auth: AuthView
    response_mode: ResponseMode
    sync_timeout_seconds: float
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    correlation_key: str | None = None
    """A template over `trigger` (the delivery's body) giving each event's correlation key:
    a delivery resumes the `wait_for_event` steps waiting for it."""
    # The URL to give the sender: PUBLIC_URL + /hooks/{path} (relative when PUBLIC_URL is unset).
    url: str
    registration: Registration | None = None
    """The subscription the scheduler keeps at the sender (DESIGN §6), or null."""
    registration_status: RegistrationStatus | None = None
    """Where that registration stands: pending, registered, failed (with `last_error`) or
    removed; null without a registration."""


class SavedWebhook(WebhookView, frozen=True, kw_only=True):
    """The answer to a create or change: `generated_secret` is shown this once, else null."""

    generated_secret: str | None = None

    def __repr__(self) -> str:
        return f"SavedWebhook(id={self.id!r}, path={self.path!r}, generated_secret=<redacted>)"


class IntakeEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """What the hook route needs of an endpoint, secrets decrypted (memory only)."""

    id: uuid.UUID
    trigger_key: str
    path: str
    auth: AuthState
    response_mode: ResponseMode
    sync_timeout_seconds: float
    enabled: bool
    routes: list[Route]  # where its events go, as read with it (`server.runs.intake`)
    correlation_key: str | None = None  # the template of its events' correlation key


_E = WebhookEndpoint
_COLUMNS = (
    _E.id, _E.trigger_key, _E.path, _E.auth_type, _E.auth_config, _E.response_mode,
    _E.enabled, _E.created_at, _E.updated_at,
)  # fmt: skip


async def list_webhooks(
    *, limit: int, after: tuple[dt.datetime, uuid.UUID] | None, trigger_key: str | None = None
) -> list[WebhookView]:
    """Oldest first, strictly after the `(created_at, id)` keyset position."""
    query = _E.select(*_COLUMNS)
    if after is not None:
        query = query.where(after_position(_E, after))
    if trigger_key is not None:
        query = query.where(_E.trigger_key == trigger_key)
    rows = await query.order_by(_E.created_at, _E.id).limit(limit).output(load_json=True).run()
    return await _views(rows)


async def get_webhook(webhook_id: uuid.UUID) -> WebhookView:
    row = await _E.select(*_COLUMNS).where(_E.id == webhook_id).output(load_json=True).first().run()
    if row is None:
        raise NotFoundError(f"webhook {webhook_id} not found")
    return (await _views([row]))[0]


async def _views(rows: list[dict[str, Any]]) -> list[WebhookView]:
    registrations = await endpoint_registrations([row["id"] for row in rows])
    views = []
    for row in rows:
        view = _view(row)
        found = registrations.get(view.id)
        if found is not None:
            view = msgspec.structs.replace(
                view, registration=found.spec, registration_status=found.status
            )
        views.append(view)
    return views


async def create_webhook(
    *,
    keyring: Keyring,
    trigger_key: str,
    path: str,
    auth: AuthInput,
    response_mode: ResponseMode,
    sync_timeout_seconds: float,
    enabled: bool,
    correlation_key: str | None = None,
    registration: Registration | None = None,
) -> SavedWebhook:
    """Store a new endpoint (registering its trigger key) with its registration, if any; a
    taken path is a conflict."""
    _check_path(path)
    state, generated = next_auth(None, auth)
    row_id = uuid.uuid4()
    row = _E(
        id=row_id,
        trigger_key=trigger_key,
        path=path,
        auth_config={
            **auth_settings(state),
            "sync_timeout_seconds": sync_timeout_seconds,
            **({"correlation_key": correlation_key} if correlation_key else {}),
        },
        response_mode=response_mode.value,
        enabled=enabled,
        **_auth_columns(keyring, row_id, state),
    )
    try:
        async with transaction():
            await _register_trigger(trigger_key)
            await _E.insert(row).run()
            if registration is not None:
                await registration_created(
                    row_id, trigger_key=trigger_key, path=path, spec=registration, enabled=enabled
                )
    except asyncpg.UniqueViolationError:
        raise _path_taken(path) from None
    return await _saved(row_id, generated)


async def update_webhook(
    webhook_id: uuid.UUID, *, keyring: Keyring, changes: dict[str, Any], auth: AuthInput | None
) -> SavedWebhook:
    """Apply `changes` (trigger_key, path, response_mode, sync_timeout_seconds, enabled,
    correlation_key: None removes it; registration: None removes it) and an auth change; the
    row is locked, so concurrent rotations never lose a secret."""
    if "path" in changes:
        _check_path(changes["path"])
    generated = None
    try:
        async with transaction():
            row = await _locked_row(webhook_id)
            config = {**row["auth_config"], **changes}
            values: dict[Column | str, Any] = {"updated_at": dt.datetime.now(dt.UTC)}
            if auth is not None:
                state, generated = next_auth(_current_auth(row, keyring), auth)
                config = {
                    "sync_timeout_seconds": _sync_timeout(config),
                    "correlation_key": config.get("correlation_key"),
                    **auth_settings(state),
                }
                values.update(_auth_columns(keyring, webhook_id, state))
            values["auth_config"] = {
                k: config[k] for k in _CONFIG_KEYS if config.get(k) is not None
            }
            for name in _COLUMN_CHANGES & changes.keys():
                value = changes[name]
                values[name] = value.value if isinstance(value, ResponseMode) else value
            if "trigger_key" in changes:
                await _register_trigger(changes["trigger_key"])
            await _E.update(values).where(_E.id == webhook_id).run()
            if auth is not None or changes.keys() & _SENDER_FACING:
                await _registration_follows(webhook_id, row, changes)
    except asyncpg.UniqueViolationError:
        raise _path_taken(str(changes.get("path"))) from None
    return await _saved(webhook_id, generated)


async def delete_webhook(webhook_id: uuid.UUID) -> None:
    """Delete an endpoint; its registration is detached for removal at the sender."""
    async with transaction():
        await registration_detached(webhook_id)
        deleted = await _E.delete().where(_E.id == webhook_id).returning(_E.id).run()
        if not deleted:
            raise NotFoundError(f"webhook {webhook_id} not found")


async def _registration_follows(
    webhook_id: uuid.UUID, row: dict[str, Any], changes: dict[str, Any]
) -> None:
    """Bring the endpoint's registration (if any) in line with its change."""
    if "registration" in changes:
        spec = changes["registration"]
    else:
        current = (await endpoint_registrations([webhook_id])).get(webhook_id)
        if current is None:
            return
        spec = current.spec
    await registration_changed(
        webhook_id,
        trigger_key=changes.get("trigger_key", row["trigger_key"]),
        path=changes.get("path", row["path"]),
        enabled=changes.get("enabled", row["enabled"]),
        spec=spec,
    )


# The intake's read of an endpoint (by its unique path, when not cached), with the routes of
# its trigger key (read now so that accepting the delivery takes one more statement, not two).
# No locks.
FIND_ENDPOINT: Final = f"""
SELECT id, trigger_key, path, auth_type, auth_config::text AS auth_config, response_mode,
       enabled, secret_key_id, secret_ciphertext,
       {routes_json("webhook_endpoint.trigger_key")} AS routes
FROM webhook_endpoint WHERE path = $1
"""  # noqa: S608 - only constant SQL is interpolated


async def find_endpoint(
    path: str, keyring: Keyring, *, connection: Connection | None = None
) -> IntakeEndpoint | None:
    """The endpoint at `path` with its secrets, or None; read fresh on every call (on
    `connection`, else on a pooled one).

    Raises:
        SecretDecryptionError: its secrets cannot be decrypted with this keyring.
    """
    if connection is None:
        async with asyncpg_pool(piccolo_database()).acquire() as pooled:
            record = await pooled.fetchrow(FIND_ENDPOINT, path)
    else:
        record = await connection.fetchrow(FIND_ENDPOINT, path)
    if record is None:
        return None
    row = dict(record)
    row["auth_config"] = msgspec.json.decode(row["auth_config"])
    return IntakeEndpoint(
        **{name: row[name] for name in ("id", "trigger_key", "path", "enabled")},
        auth=stored_auth(row, keyring),
        response_mode=ResponseMode(row["response_mode"]),
        sync_timeout_seconds=_sync_timeout(row["auth_config"]),
        routes=routes_from_json(row["routes"]),
        correlation_key=row["auth_config"].get("correlation_key"),
    )


# auth_config keys; and the changes that are columns of their own.
_CONFIG_KEYS = ("secret_count", "header", "sync_timeout_seconds", "correlation_key")
_COLUMN_CHANGES = frozenset({"trigger_key", "path", "response_mode", "enabled"})
# Changes the sender sees (with any auth change): they make the registration due again.
_SENDER_FACING = frozenset({"path", "enabled", "registration", "trigger_key"})


async def _locked_row(webhook_id: uuid.UUID) -> dict[str, Any]:
    query = _E.select(*_COLUMNS, _E.secret_key_id, _E.secret_ciphertext).where(_E.id == webhook_id)
    row: dict[str, Any] | None = (
        await query.lock_rows("UPDATE").output(load_json=True).first().run()
    )
    if row is None:
        raise NotFoundError(f"webhook {webhook_id} not found")
    return row


async def _register_trigger(trigger_key: str) -> None:
    """Register `trigger_key` as a webhook source unless it is; the caller's transaction."""
    registry = WorkflowTriggerRegistry
    source = registry(
        trigger_key=trigger_key,
        type="webhook",
        description="inbound webhook (POST /hooks/{path})",
        config="{}",
        is_builtin=False,
    )
    await registry.insert(source).on_conflict(action="DO NOTHING").run()
    row = await registry.select(registry.type).where(registry.trigger_key == trigger_key).first()
    if row is None or row["type"] != "webhook":
        kind = "(deleted meanwhile)" if row is None else f"of type {row['type']!r}"
        raise ConflictError(
            f"trigger {trigger_key!r} is registered as a source {kind}, not a webhook; "
            "choose another trigger_key"
        )


async def _saved(webhook_id: uuid.UUID, generated: str | None) -> SavedWebhook:
    view = await get_webhook(webhook_id)
    return SavedWebhook(**msgspec.structs.asdict(view), generated_secret=generated)


def _current_auth(row: dict[str, Any], keyring: Keyring) -> AuthState:
    try:
        return stored_auth(row, keyring)
    except SecretDecryptionError:
        raise ConflictError(
            f"the secrets of webhook {row['id']} cannot be decrypted with the configured keys; "
            "add the key they were sealed with back to ENCRYPTION_KEYS, then change them"
        ) from None


def _auth_columns(keyring: Keyring, row_id: uuid.UUID, state: AuthState) -> dict[str, Any]:
    sealed = seal_secrets(keyring, row_id, state.secrets)
    return {
        "auth_type": state.type.value,
        "secret_ciphertext": None if sealed is None else sealed.ciphertext,
        "secret_key_id": None if sealed is None else sealed.key_id,
    }


def _sync_timeout(auth_config: dict[str, Any]) -> float:
    value = auth_config.get("sync_timeout_seconds")
    return float(value) if isinstance(value, int | float) else DEFAULT_SYNC_TIMEOUT_SECONDS


def _view(row: dict[str, Any]) -> WebhookView:
    return WebhookView(
        **{name: row[name] for name in ("id", "trigger_key", "path", "enabled")},
        auth=view_of(row["auth_type"], row["auth_config"]),
        response_mode=ResponseMode(row["response_mode"]),
        sync_timeout_seconds=_sync_timeout(row["auth_config"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        correlation_key=row["auth_config"].get("correlation_key"),
        url=f"/hooks/{row['path']}",
    )


def _check_path(path: str) -> None:
    if any(segment in {".", ".."} for segment in path.split("/")):
        raise ValidationError(
            f"webhook path {path!r} has a '.' or '..' segment, which clients resolve away",
            [{"field": "path", "message": "must not contain '.' or '..' segments"}],
        )
    if path.split("/", 1)[0] == RESERVED_FIRST_SEGMENT:
        raise ValidationError(
            f"webhook path {path!r} starts with {RESERVED_FIRST_SEGMENT!r}: /hooks/"
            f"{RESERVED_FIRST_SEGMENT}/ holds wait_for_event resume links; choose another path",
            [{"field": "path", "message": f"must not start with {RESERVED_FIRST_SEGMENT!r}"}],
        )


def _path_taken(path: str) -> ConflictError:
    return ConflictError(f"webhook path {path!r} is taken by another endpoint; choose another")
