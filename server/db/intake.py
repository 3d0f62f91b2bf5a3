"""The one intake path of every trigger: record the event, fan it out, in the caller's transaction.

Events API calls, webhooks, schedule fires and manual runs all come through `accept_event`. The
`trigger_event` row and the jobs of the executions it starts commit together before the caller
answers 2xx, so an acknowledged event is never lost (even with no worker running: the jobs
wait in the queue). A repeated idempotency key for the same trigger finds the first event and
starts nothing: the unique index on (trigger_key, idempotency_key) makes a racing duplicate
wait for the first insert and then see it. Each active subscription of the trigger key whose
filter passes starts one execution on its workflow's latest published version; events that
match nothing, or that every filter refuses, are kept with the reason.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec
import structlog

from server.db.runs import start_execution
from server.engine.rendering import RenderError, evaluate
from server.queue.client import Connection

log = structlog.get_logger(__name__)


class AcceptedEvent(msgspec.Struct, frozen=True, kw_only=True):
    trigger_key: str
    event_id: uuid.UUID
    execution_ids: list[uuid.UUID]
    duplicate: bool = False
    outcome: str = "accepted"


# DO NOTHING on a repeated (trigger_key, idempotency_key): NULL keys never conflict.
INSERT_EVENT: Final = """
INSERT INTO trigger_event (id, trigger_key, trigger_type, payload, idempotency_key, source, outcome)
VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, 'accepted')
ON CONFLICT (trigger_key, idempotency_key) DO NOTHING
RETURNING id
"""
FIRST_EVENT: Final = """
SELECT ev.id, coalesce(array_agg(ex.id ORDER BY ex.created_at, ex.id) FILTER (WHERE ex.id IS NOT NULL),
                       '{}') AS execution_ids
FROM trigger_event ev LEFT JOIN workflow_execution ex ON ex.trigger_event_id = ev.id
WHERE ev.trigger_key = $1 AND ev.idempotency_key = $2
GROUP BY ev.id
"""
# Subscriptions that can start a run: active, on an active workflow with a published version.
MATCHING_SUBSCRIPTIONS: Final = """
SELECT s.workflow_id, s.filter_conditions::text AS filter_conditions
FROM workflow_subscription s JOIN workflow_definition d ON d.id = s.workflow_id
WHERE s.trigger_key = $1 AND s.is_active AND d.is_active
  AND EXISTS (SELECT 1 FROM workflow_version v WHERE v.workflow_id = d.id AND v.status = 'published')
ORDER BY s.created_at, s.id
"""
SET_OUTCOME: Final = "UPDATE trigger_event SET outcome = $2, outcome_detail = $3 WHERE id = $1"


async def accept_event(
    connection: Connection,
    *,
    trigger_key: str,
    trigger_type: str,
    payload: Any,
    idempotency_key: str | None = None,
    source: dict[str, Any] | None = None,
) -> AcceptedEvent:
    """Record one event and start the executions it triggers; call inside a transaction."""
    event_id = uuid.uuid4()
    inserted = await connection.fetchval(
        INSERT_EVENT, event_id, trigger_key, trigger_type,
        msgspec.json.encode(payload).decode(), idempotency_key,
        msgspec.json.encode(source or {}).decode(),
    )  # fmt: skip
    if inserted is None:
        first = await connection.fetchrow(FIRST_EVENT, trigger_key, idempotency_key)
        if first is None:  # cannot happen: the conflicting row is committed and visible
            raise RuntimeError(f"event {idempotency_key!r} of {trigger_key!r} vanished")
        log.info("event_deduplicated", trigger_key=trigger_key, event_id=str(first["id"]))
        return AcceptedEvent(
            trigger_key=trigger_key,
            event_id=first["id"],
            execution_ids=list(first["execution_ids"]),
            duplicate=True,
        )
    execution_ids, refusals = await _fan_out(
        connection, event_id, trigger_key, trigger_type, payload
    )
    outcome, detail = "accepted", None
    if not execution_ids:
        outcome = "filtered" if refusals else "no_match"
        detail = "; ".join(refusals) if refusals else f"no active subscription to {trigger_key!r}"
        await connection.execute(SET_OUTCOME, event_id, outcome, detail[:2000])
    log.info(
        "event_accepted", trigger_key=trigger_key, event_id=str(event_id),
        outcome=outcome, executions=len(execution_ids),
    )  # fmt: skip
    return AcceptedEvent(
        trigger_key=trigger_key, event_id=event_id, execution_ids=execution_ids, outcome=outcome
    )


async def _fan_out(
    connection: Connection, event_id: uuid.UUID, trigger_key: str, trigger_type: str, payload: Any
) -> tuple[list[uuid.UUID], list[str]]:
    execution_ids: list[uuid.UUID] = []
    refusals: list[str] = []
    for row in await connection.fetch(MATCHING_SUBSCRIPTIONS, trigger_key):
        reason = filter_refusal(msgspec.json.decode(row["filter_conditions"]), payload)
        if reason is not None:
            refusals.append(f"workflow {row['workflow_id']}: {reason}")
            continue
        execution_ids.append(
            await start_execution(
                connection,
                workflow_id=row["workflow_id"],
                trigger=payload,
                trigger_event_id=event_id,
                trigger_type=trigger_type,
            )
        )
    return execution_ids, refusals


def filter_refusal(filter_conditions: dict[str, Any], payload: Any) -> str | None:
    """Why a subscription's filter refuses this payload, or None when the event passes."""
    expression = filter_conditions.get("expression")
    if not expression:
        return None
    try:
        passed = evaluate(expression, {"trigger": payload}, "filter_conditions.expression")
    except RenderError as error:
        return f"filter failed: {error}"
    return None if passed else f"filter `{expression}` is false"


PENDING_EVENT: Final = """
SELECT trigger_key, trigger_type, payload::text AS payload
FROM trigger_event WHERE id = $1 AND outcome = 'pending'
FOR UPDATE
"""


async def fan_out_recorded_event(
    connection: Connection, event_id: uuid.UUID
) -> AcceptedEvent | None:
    """Fan out an event recorded by a database trigger (outcome `pending`); call inside the
    transaction that completes its job. None when it was fanned out already."""
    row = await connection.fetchrow(PENDING_EVENT, event_id)
    if row is None:
        return None
    payload = msgspec.json.decode(row["payload"])
    execution_ids, refusals = await _fan_out(
        connection, event_id, row["trigger_key"], row["trigger_type"], payload
    )
    outcome, detail = "accepted", None
    if not execution_ids:
        outcome = "filtered" if refusals else "no_match"
        detail = (
            "; ".join(refusals) if refusals else f"no active subscription to {row['trigger_key']!r}"
        )
    await connection.execute(SET_OUTCOME, event_id, outcome, detail[:2000] if detail else None)
    return AcceptedEvent(
        trigger_key=row["trigger_key"],
        event_id=event_id,
        execution_ids=execution_ids,
        outcome=outcome,
    )
