"""The scheduler's statements on `webhook_registration`: find due rows, lock one, load it with
its endpoint, record each step of a reconciliation. Raw asyncpg on the caller's connection.

Locking: a reconciliation holds a session-level advisory lock on its row
(`TRY_LOCK_REGISTRATION`, on a pooled connection kept for the pass, with no transaction open
while the sender is called), so one replica at a time works on a registration. It is taken
with try: a replica that does not get it skips the row (its holder is at work). PostgreSQL
releases it when the holder's connection ends, so a SIGKILLed replica frees its rows at once.
The row is read again after the lock is taken (`LOAD_REGISTRATION`), never trusted from the
due scan, so what the previous holder recorded (an external id) is always seen. Every write is
one autocommit statement.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Final

import msgspec

from server.db.webhook_registrations import decode_spec
from server.queue.client import Connection
from server.triggers.registration import Registration, RegistrationState

# Advisory lock class of registrations (two-key form, so it never meets a one-key lock).
REGISTRATION_LOCK_CLASS: Final = 0x7377_7267  # "swrg"

DUE_REGISTRATIONS: Final = """
SELECT id FROM webhook_registration WHERE next_check_at <= now()
ORDER BY next_check_at, id LIMIT $1
"""

# Seconds until the earliest due row (negative: overdue), NULL when there is none.
SECONDS_TO_NEXT_DUE: Final = """
SELECT EXTRACT(EPOCH FROM min(next_check_at) - now())::float8 FROM webhook_registration
"""

TRY_LOCK_REGISTRATION: Final = "SELECT pg_try_advisory_lock($1::int4, hashtext($2::text))"
UNLOCK_REGISTRATION: Final = "SELECT pg_advisory_unlock($1::int4, hashtext($2::text))"

# The row (due or not, by the database clock) with what its endpoint says now; secrets stay
# sealed here. `in_flight_seconds`: how much longer a call started by a previous holder may
# still be under way (0 when none).
LOAD_REGISTRATION: Final = """
SELECT r.id, r.endpoint_id, r.path, r.provider, r.spec::text AS spec, r.wanted,
       r.detached_at, r.generation, r.applied_generation, r.state, r.external_id,
       r.registered_url, r.subscription::text AS subscription, r.last_error, r.checked_at,
       r.renewed_at, r.expires_at, r.failures,
       r.next_check_at <= now() AS due,
       GREATEST(0, EXTRACT(EPOCH FROM r.call_started_at + make_interval(secs => $2) - now()))
           ::float8 AS in_flight_seconds,
       COALESCE(e.enabled, false) AND r.wanted AND r.detached_at IS NULL AS should_exist,
       COALESCE(e.secret_ciphertext, r.secret_ciphertext) AS secret_ciphertext,
       COALESCE(e.secret_key_id, r.secret_key_id) AS secret_key_id
FROM webhook_registration r
LEFT JOIN webhook_endpoint e ON e.id = r.endpoint_id AND r.detached_at IS NULL
WHERE r.id = $1
"""

CLAIM_REGISTRATION: Final = """
UPDATE webhook_registration SET claimed_by = $2, claimed_at = now() WHERE id = $1
"""

# Set just before a call that may create something at the sender; a successor that finds it
# set waits until the call's timeout has passed before it looks at the sender.
MARK_CALL_STARTED: Final = """
UPDATE webhook_registration SET call_started_at = now() WHERE id = $1
"""

# What exists at the sender now, recorded as soon as it is known (after a create, before the
# rest of the pass): a kill after this point leaves nothing unaccounted for.
RECORD_SENDER_SIDE: Final = """
UPDATE webhook_registration
SET external_id = $2, registered_url = $3, subscription = $4::text::jsonb,
    renewed_at = COALESCE($5, renewed_at), expires_at = $6, call_started_at = NULL,
    updated_at = now()
WHERE id = $1
"""

# The end of a successful pass. A change that arrived meanwhile (generation moved past $2)
# leaves the row pending and due at once.
RECORD_SUCCESS: Final = """
UPDATE webhook_registration
SET applied_generation = $2,
    state = CASE WHEN generation > $2 THEN 'pending' ELSE $3 END,
    last_error = NULL, failures = 0, checked_at = now(), claimed_by = NULL, claimed_at = NULL,
    next_check_at = CASE WHEN generation > $2 THEN now() ELSE $4::timestamptz END,
    updated_at = now()
WHERE id = $1
"""

RECORD_FAILURE: Final = """
UPDATE webhook_registration
SET state = 'failed', last_error = $2, failures = failures + 1, checked_at = now(),
    claimed_by = NULL, claimed_at = NULL,
    next_check_at = CASE WHEN generation > $3 THEN now()
                         ELSE now() + make_interval(secs => $4) END,
    updated_at = now()
WHERE id = $1
"""

# A detached row removed at its sender is done (unless it was re-detached meanwhile).
DELETE_REMOVED: Final = """
DELETE FROM webhook_registration WHERE id = $1 AND detached_at IS NOT NULL AND generation = $2
"""

COUNT_BY_STATE: Final = """
SELECT state, detached_at IS NOT NULL AS stale, count(*) AS count
FROM webhook_registration GROUP BY 1, 2
"""

EXPIRIES: Final = """
SELECT endpoint_id, path, EXTRACT(EPOCH FROM expires_at - now())::float8 AS seconds
FROM webhook_registration WHERE expires_at IS NOT NULL AND detached_at IS NULL
"""


class RegistrationWork(msgspec.Struct, frozen=True, kw_only=True):
    """One registration as a reconciliation sees it after taking its lock."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    path: str
    spec: Registration
    detached: bool
    should_exist: bool
    due: bool
    generation: int
    applied_generation: int
    state: RegistrationState
    external_id: str | None
    registered_url: str | None
    subscription: Any
    renewed_at: dt.datetime | None
    expires_at: dt.datetime | None
    failures: int
    in_flight_seconds: float
    secret_ciphertext: bytes | None
    secret_key_id: str | None

    def __repr__(self) -> str:
        return f"RegistrationWork(id={self.id!r}, path={self.path!r}, secrets=<sealed>)"


class RegistrationCount(msgspec.Struct, frozen=True, kw_only=True):
    state: RegistrationState
    stale: bool
    count: int


class RegistrationExpiry(msgspec.Struct, frozen=True, kw_only=True):
    endpoint_id: uuid.UUID
    path: str
    seconds: float


async def due_registrations(connection: Connection, limit: int) -> list[uuid.UUID]:
    return [row["id"] for row in await connection.fetch(DUE_REGISTRATIONS, limit)]


async def seconds_to_next_due(connection: Connection) -> float | None:
    value = await connection.fetchval(SECONDS_TO_NEXT_DUE)
    return None if value is None else float(value)


async def try_lock(connection: Connection, registration_id: uuid.UUID) -> bool:
    return bool(
        await connection.fetchval(
            TRY_LOCK_REGISTRATION, REGISTRATION_LOCK_CLASS, str(registration_id)
        )
    )


async def unlock(connection: Connection, registration_id: uuid.UUID) -> None:
    await connection.fetchval(UNLOCK_REGISTRATION, REGISTRATION_LOCK_CLASS, str(registration_id))


async def load_registration(
    connection: Connection, registration_id: uuid.UUID, *, call_timeout_seconds: float
) -> RegistrationWork | None:
    row = await connection.fetchrow(LOAD_REGISTRATION, registration_id, call_timeout_seconds)
    if row is None:
        return None
    subscription = row["subscription"]
    return RegistrationWork(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        path=row["path"],
        spec=decode_spec(row["spec"]),
        detached=row["detached_at"] is not None,
        should_exist=row["should_exist"],
        due=row["due"],
        generation=row["generation"],
        applied_generation=row["applied_generation"],
        state=RegistrationState(row["state"]),
        external_id=row["external_id"],
        registered_url=row["registered_url"],
        subscription=None if subscription is None else msgspec.json.decode(subscription),
        renewed_at=row["renewed_at"],
        expires_at=row["expires_at"],
        failures=row["failures"],
        in_flight_seconds=row["in_flight_seconds"] or 0.0,
        secret_ciphertext=row["secret_ciphertext"],
        secret_key_id=row["secret_key_id"],
    )


async def claim(connection: Connection, registration_id: uuid.UUID, claimed_by: str) -> None:
    await connection.execute(CLAIM_REGISTRATION, registration_id, claimed_by)


async def mark_call_started(connection: Connection, registration_id: uuid.UUID) -> None:
    await connection.execute(MARK_CALL_STARTED, registration_id)


class SenderSide(msgspec.Struct, frozen=True, kw_only=True):
    """What exists at the sender for a registration (nothing: all None)."""

    external_id: str | None = None
    registered_url: str | None = None
    subscription: Any = None
    renewed_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None


async def record_sender_side(
    connection: Connection, registration_id: uuid.UUID, side: SenderSide
) -> None:
    subscription = None if side.subscription is None else msgspec.json.encode(side.subscription)
    await connection.execute(
        RECORD_SENDER_SIDE, registration_id, side.external_id, side.registered_url,
        None if subscription is None else subscription.decode(), side.renewed_at,
        side.expires_at,
    )  # fmt: skip


async def record_success(
    connection: Connection,
    work: RegistrationWork,
    state: RegistrationState,
    next_check_at: dt.datetime,
) -> None:
    await connection.execute(RECORD_SUCCESS, work.id, work.generation, state.value, next_check_at)


async def record_failure(
    connection: Connection, work: RegistrationWork, error: str, retry_in: dt.timedelta
) -> None:
    await connection.execute(
        RECORD_FAILURE, work.id, error[:2000], work.generation, retry_in.total_seconds()
    )


async def delete_removed(connection: Connection, work: RegistrationWork) -> None:
    await connection.execute(DELETE_REMOVED, work.id, work.generation)


async def registration_counts(connection: Connection) -> list[RegistrationCount]:
    return [
        RegistrationCount(state=RegistrationState(r["state"]), stale=r["stale"], count=r["count"])
        for r in await connection.fetch(COUNT_BY_STATE)
    ]


async def registration_expiries(connection: Connection) -> list[RegistrationExpiry]:
    return [msgspec.convert(dict(r), RegistrationExpiry) for r in await connection.fetch(EXPIRIES)]
