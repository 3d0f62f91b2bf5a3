"""Webhook registrations (table `webhook_registration`): what the API writes and reads.

The endpoint repository (`server.db.webhooks`) calls `registration_created`,
`registration_changed` and `registration_detached` inside the endpoint's own transaction, so a
registration always matches its endpoint; each bumps the row's `generation`, makes it due now
and notifies `switchyard_registrations` with its id (delivered at commit), which wakes the
scheduler role (`server.scheduler.registrations`). Deleting an endpoint, or replacing its
registration with one for another repository or subscribe call, detaches the row instead of
deleting it: the scheduler removes it at the sender, then deletes it, and until then it is
listed by `stale_registrations`. A detached row keeps a copy of the endpoint's sealed secrets
(still bound to the endpoint's id) for an `http` unsubscribe template; `switchyard rotate-keys`
does not re-seal that copy, so keep a retired key in ENCRYPTION_KEYS until the stale list is
empty. The scheduler's own statements are in `server.db.registration_runs`. Secrets never
appear in any view here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Final

import msgspec

from server.db.tables import WebhookEndpoint
from server.triggers.registration import (
    Registration,
    RegistrationState,
    provider_of,
    same_registration,
)

REGISTRATION_CHANNEL: Final = "switchyard_registrations"


class RegistrationStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Where a registration stands at its sender (DESIGN §6); never holds a secret."""

    state: RegistrationState
    external_id: str | None = None
    last_error: str | None = None
    checked_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None


class EndpointRegistration(msgspec.Struct, frozen=True, kw_only=True):
    spec: Registration
    status: RegistrationStatus


class StaleRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """A registration whose endpoint was deleted (or whose spec was replaced), not yet removed
    at its sender; the scheduler keeps retrying."""

    id: uuid.UUID
    webhook_id: uuid.UUID
    trigger_key: str
    path: str
    provider: str
    detached_at: dt.datetime
    next_attempt_at: dt.datetime
    status: RegistrationStatus


_STATUS_COLUMNS: Final = "state, external_id, last_error, checked_at, expires_at"


def status_of(row: dict[str, Any]) -> RegistrationStatus:
    return RegistrationStatus(
        state=RegistrationState(row["state"]),
        external_id=row["external_id"],
        last_error=row["last_error"],
        checked_at=row["checked_at"],
        expires_at=row["expires_at"],
    )


def _spec_json(spec: Registration) -> str:
    return msgspec.json.encode(spec).decode()


def decode_spec(value: str | bytes) -> Registration:
    return msgspec.json.decode(value, type=Registration)


async def _raw(sql: str, *args: Any) -> list[dict[str, Any]]:
    """A statement in the caller's Piccolo transaction (if any); `{}` are the parameters."""
    rows: list[dict[str, Any]] = await WebhookEndpoint.raw(sql, *args).run()
    return rows


async def _notify(registration_ids: list[uuid.UUID]) -> None:
    for registration_id in registration_ids:
        await _raw("SELECT pg_notify({}, {})", REGISTRATION_CHANNEL, str(registration_id))


async def registration_created(
    endpoint_id: uuid.UUID, *, trigger_key: str, path: str, spec: Registration, enabled: bool
) -> None:
    """A new endpoint's registration, due now; the caller's transaction."""
    registration_id = uuid.uuid4()
    await _raw(
        "INSERT INTO webhook_registration (id, endpoint_id, trigger_key, path, provider, spec, "
        "wanted) VALUES ({}, {}, {}, {}, {}, {}::jsonb, {})",
        registration_id, endpoint_id, trigger_key, path, provider_of(spec).value,
        _spec_json(spec), enabled,
    )  # fmt: skip
    await _notify([registration_id])


async def registration_changed(
    endpoint_id: uuid.UUID,
    *,
    trigger_key: str,
    path: str,
    enabled: bool,
    spec: Registration | None,
) -> None:
    """Bring the endpoint's registration in line with its new settings (`spec` None: it has
    none any more); the caller's transaction, which holds the endpoint's row lock."""
    rows = await _raw(
        "SELECT id, spec::text AS spec FROM webhook_registration "
        "WHERE endpoint_id = {} AND detached_at IS NULL FOR UPDATE",
        endpoint_id,
    )
    current = rows[0] if rows else None
    if current is not None and (spec is None or not same_registration(
        decode_spec(current["spec"]), spec
    )):  # fmt: skip
        await registration_detached(endpoint_id)
        current = None
    if spec is None:
        return
    if current is None:
        await registration_created(
            endpoint_id, trigger_key=trigger_key, path=path, spec=spec, enabled=enabled
        )
        return
    await _raw(
        "UPDATE webhook_registration SET trigger_key = {}, path = {}, spec = {}::jsonb, "
        "wanted = {}, generation = generation + 1, state = 'pending', failures = 0, "
        "next_check_at = now(), updated_at = now() WHERE id = {}",
        trigger_key, path, _spec_json(spec), enabled, current["id"],
    )  # fmt: skip
    await _notify([current["id"]])


async def registration_detached(endpoint_id: uuid.UUID) -> None:
    """The endpoint is being deleted or loses its registration: keep the row, with a copy of
    the endpoint's sealed secrets, for the scheduler to remove at the sender (a row known to
    have nothing registered is deleted at once). Call before deleting the endpoint row."""
    await _raw(
        "DELETE FROM webhook_registration WHERE endpoint_id = {} AND detached_at IS NULL "
        "AND state = 'removed' AND applied_generation = generation "
        "AND external_id IS NULL AND subscription IS NULL AND call_started_at IS NULL",
        endpoint_id,
    )
    rows = await _raw(
        "UPDATE webhook_registration r SET detached_at = now(), wanted = false, "
        "generation = r.generation + 1, state = 'pending', failures = 0, "
        "next_check_at = now(), updated_at = now(), "
        "secret_ciphertext = e.secret_ciphertext, secret_key_id = e.secret_key_id "
        "FROM webhook_endpoint e WHERE e.id = r.endpoint_id AND r.endpoint_id = {} "
        "AND r.detached_at IS NULL RETURNING r.id",
        endpoint_id,
    )
    await _notify([row["id"] for row in rows])


async def endpoint_registrations(
    endpoint_ids: list[uuid.UUID],
) -> dict[uuid.UUID, EndpointRegistration]:
    """The attached registration of each endpoint that has one."""
    if not endpoint_ids:
        return {}
    rows = await _raw(
        f"SELECT endpoint_id, spec::text AS spec, {_STATUS_COLUMNS} FROM webhook_registration "  # noqa: S608 - constant columns
        "WHERE endpoint_id = ANY({}::uuid[]) AND detached_at IS NULL",
        endpoint_ids,
    )
    return {
        row["endpoint_id"]: EndpointRegistration(
            spec=decode_spec(row["spec"]), status=status_of(row)
        )
        for row in rows
    }


async def stale_registrations(
    *, limit: int, after: tuple[dt.datetime, uuid.UUID] | None
) -> list[StaleRegistration]:
    """Detached registrations not yet removed at their sender, oldest first."""
    after_at, after_id = after if after is not None else (None, None)
    rows = await _raw(
        f"SELECT id, endpoint_id, trigger_key, path, provider, detached_at, next_check_at, "  # noqa: S608 - constant columns
        f"{_STATUS_COLUMNS} FROM webhook_registration WHERE detached_at IS NOT NULL "
        "AND ({}::timestamptz IS NULL OR (detached_at, id) > ({}::timestamptz, {}::uuid)) "
        "ORDER BY detached_at, id LIMIT {}",
        after_at, after_at, after_id, limit,
    )  # fmt: skip
    return [
        StaleRegistration(
            id=row["id"],
            webhook_id=row["endpoint_id"],
            trigger_key=row["trigger_key"],
            path=row["path"],
            provider=row["provider"],
            detached_at=row["detached_at"],
            next_attempt_at=row["next_check_at"],
            status=status_of(row),
        )
        for row in rows
    ]


class TriggerRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """A registration as trigger health lists it under its trigger key."""

    webhook_id: uuid.UUID
    path: str
    provider: str
    stale: bool
    status: RegistrationStatus


async def registrations_by_trigger(
    trigger_keys: list[str],
) -> dict[str, list[TriggerRegistration]]:
    """The registrations (attached and stale) of each trigger key, oldest first."""
    if not trigger_keys:
        return {}
    rows = await _raw(
        f"SELECT trigger_key, endpoint_id, path, provider, detached_at IS NOT NULL AS stale, "  # noqa: S608 - constant columns
        f"{_STATUS_COLUMNS} FROM webhook_registration WHERE trigger_key = ANY({{}}::text[]) "
        "ORDER BY created_at, id",
        trigger_keys,
    )
    found: dict[str, list[TriggerRegistration]] = {}
    for row in rows:
        found.setdefault(row["trigger_key"], []).append(
            TriggerRegistration(
                webhook_id=row["endpoint_id"],
                path=row["path"],
                provider=row["provider"],
                stale=row["stale"],
                status=status_of(row),
            )
        )
    return found
