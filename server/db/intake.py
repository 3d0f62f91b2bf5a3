"""The one intake path of every trigger: record the event, fan it out, in one write.

Events API calls, webhooks, schedule fires and manual runs all come through `accept_event`. The
`trigger_event` row and the executions it starts (each with its entry step and that step's
job) are written by ONE statement, so they commit together before the caller answers 2xx: an
acknowledged event is never lost (even with no worker running: the jobs wait in the queue).
Called outside a transaction, that statement is its own transaction; inside one, it commits
with the caller's other writes. A repeated idempotency key for the same trigger finds the
first event and starts nothing: the unique index on (trigger_key, idempotency_key) makes a
racing duplicate wait for the first insert and then see it (ON CONFLICT DO NOTHING inserts no
event, and every other insert of the statement depends on the event's). Each active
subscription of the trigger key whose filter passes starts one execution on its workflow's
latest published version (`ROUTES_JSON`, read just before in one statement, or by the webhook
intake together with its endpoint); events that match nothing, or that every filter refuses,
are kept with the reason.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec
import structlog

from server.db.runs import step_job
from server.engine.bounded import evaluate_bounded
from server.engine.document import Step, StepKind
from server.engine.rendering import RenderError
from server.queue.client import Connection, job_arrays
from server.queue.sql import enqueue_jobs_ctes

log = structlog.get_logger(__name__)


class AcceptedEvent(msgspec.Struct, frozen=True, kw_only=True):
    trigger_key: str
    event_id: uuid.UUID
    execution_ids: list[uuid.UUID]
    duplicate: bool = False
    outcome: str = "accepted"


FIRST_EVENT: Final = """
SELECT ev.id, coalesce(array_agg(ex.id ORDER BY ex.created_at, ex.id) FILTER (WHERE ex.id IS NOT NULL),
                       '{}') AS execution_ids
FROM trigger_event ev LEFT JOIN workflow_execution ex ON ex.trigger_event_id = ev.id
WHERE ev.trigger_key = $1 AND ev.idempotency_key = $2
GROUP BY ev.id
"""

# Where an event of a trigger key goes, as one JSON array for a scalar subquery (`{trigger_key}`
# is the SQL expression naming the key; the webhook intake reads it with its endpoint): each
# active subscription on an active workflow, oldest first, with the workflow's latest published
# version and that version's entry step (the one step without incoming edges; a published graph
# has exactly one). No locks.
ROUTES_JSON: Final = """(
    SELECT coalesce(json_agg(json_build_array(s.workflow_id, s.filter_conditions, v.id, st.id,
                                              st.step_key, st.kind, st.action_key, st.cfg)
                             ORDER BY s.created_at, s.id), '[]')::text
    FROM workflow_subscription s
    JOIN workflow_definition d ON d.id = s.workflow_id AND d.is_active
    JOIN LATERAL (
        SELECT id FROM workflow_version
        WHERE workflow_id = d.id AND status = 'published'
        ORDER BY version_num DESC LIMIT 1
    ) v ON true
    JOIN workflow_step st ON st.version_id = v.id
         AND NOT EXISTS (SELECT 1 FROM workflow_edge e WHERE e.to_step_id = st.id)
    WHERE s.trigger_key = {trigger_key} AND s.is_active
)"""
ROUTES: Final = f"SELECT {ROUTES_JSON.format(trigger_key='$1')}"


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """An active subscription's workflow, version and entry step (see ROUTES_JSON)."""

    workflow_id: uuid.UUID
    filter_conditions: dict[str, Any]
    version_id: uuid.UUID
    step_id: uuid.UUID
    entry: Step


def routes_from_json(text: str) -> list[Route]:
    """Decode ROUTES_JSON."""
    return [
        Route(
            workflow_id=uuid.UUID(workflow_id),
            filter_conditions=filter_conditions or {},
            version_id=uuid.UUID(version_id),
            step_id=uuid.UUID(step_id),
            entry=Step(key=key, kind=StepKind(kind), action_key=action_key, cfg=cfg),
        )
        for workflow_id, filter_conditions, version_id, step_id, key, kind, action_key, cfg in (
            msgspec.json.decode(text)
        )
    ]


async def read_routes(connection: Connection, trigger_key: str) -> list[Route]:
    return routes_from_json(await connection.fetchval(ROUTES, trigger_key))


def _start_executions(event: str, first: int) -> str:
    """The fan-out writes after the CTE `event` (one row: id, payload, trigger_type; or none,
    and then nothing is written): the executions (ids, workflows, versions at `$first` ..
    `$first+2`), their entry steps (step ids, keys at `$first+3`, `$first+4`) and those steps'
    jobs (`enqueue_jobs_ctes` arrays from `$first+5`)."""
    ids, workflows, versions, steps, keys = (f"${first + offset}" for offset in range(5))
    return f"""
WITH event AS ({event}),
executions AS (
    INSERT INTO workflow_execution
        (id, workflow_id, version_id, status, context_data, trigger_event_id, trigger_type)
    SELECT new.id, new.workflow_id, new.version_id, 'PENDING',
           jsonb_build_object('trigger', event.payload), event.id, event.trigger_type
    FROM event CROSS JOIN unnest({ids}::uuid[], {workflows}::uuid[], {versions}::uuid[])
         AS new (id, workflow_id, version_id)
),
entry_steps AS (
    INSERT INTO step_execution (id, execution_id, step_id, step_key, status, created_at, branches)
    SELECT gen_random_uuid(), new.execution_id, new.step_id, new.step_key, 'PENDING',
           clock_timestamp(), '{{}}'
    FROM event CROSS JOIN unnest({ids}::uuid[], {steps}::uuid[], {keys}::text[])
         AS new (execution_id, step_id, step_key)
),
{enqueue_jobs_ctes(first + 5, only_if="EXISTS (SELECT 1 FROM event)")}
SELECT (SELECT id FROM event) AS event_id, (SELECT count(*) FROM enqueued_wake) AS woken
"""  # noqa: S608 - built from constants


# A new event ($1 id .. $6 source; $7 outcome, $8 its detail); nothing on a repeated
# (trigger_key, idempotency_key): NULL keys never conflict.
RECORD_EVENT: Final = _start_executions(
    """
    INSERT INTO trigger_event
        (id, trigger_key, trigger_type, payload, idempotency_key, source, outcome, outcome_detail)
    VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, $8)
    ON CONFLICT (trigger_key, idempotency_key) DO NOTHING
    RETURNING id, payload, trigger_type
""",
    first=9,
)

# An event a database trigger recorded (outcome `pending`), fanned out once: $1 its id, $2 the
# outcome, $3 its detail. The row lock makes a concurrent fan-out of the same event wait, then
# find it no longer pending and write nothing.
FAN_OUT_RECORDED_EVENT: Final = _start_executions(
    """
    UPDATE trigger_event SET outcome = $2, outcome_detail = $3
    WHERE id = $1 AND outcome = 'pending'
    RETURNING id, payload, trigger_type
""",
    first=4,
)


class _Start(msgspec.Struct, frozen=True, kw_only=True):
    """A route whose filter passed: the execution it starts."""

    execution_id: uuid.UUID
    route: Route


class _FanOut(msgspec.Struct, frozen=True, kw_only=True):
    starts: list[_Start]
    outcome: str
    detail: str | None


async def accept_event(
    connection: Connection,
    *,
    trigger_key: str,
    trigger_type: str,
    payload: Any,
    idempotency_key: str | None = None,
    source: dict[str, Any] | None = None,
    routes: list[Route] | None = None,
) -> AcceptedEvent:
    """Record one event and start the executions it triggers (see the module docstring).
    `routes`: the trigger key's routes if the caller has read them (else they are read)."""
    if routes is None:
        routes = await read_routes(connection, trigger_key)
    fan_out = await _fan_out(routes, trigger_key, payload)
    event_id = uuid.uuid4()
    row = await connection.fetchrow(
        RECORD_EVENT, event_id, trigger_key, trigger_type,
        msgspec.json.encode(payload).decode(), idempotency_key,
        msgspec.json.encode(source or {}).decode(), fan_out.outcome, fan_out.detail,
        *_fan_out_arrays(fan_out.starts),
    )  # fmt: skip
    if row is None or row["event_id"] is None:
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
    execution_ids = [start.execution_id for start in fan_out.starts]
    log.info(
        "event_accepted", trigger_key=trigger_key, event_id=str(event_id),
        outcome=fan_out.outcome, executions=len(execution_ids),
    )  # fmt: skip
    return AcceptedEvent(
        trigger_key=trigger_key,
        event_id=event_id,
        execution_ids=execution_ids,
        outcome=fan_out.outcome,
    )


async def _fan_out(routes: list[Route], trigger_key: str, payload: Any) -> _FanOut:
    """The executions an event of `trigger_key` starts, and its outcome with the reason."""
    starts: list[_Start] = []
    refusals: list[str] = []
    for route in routes:
        reason = await filter_refusal(route.filter_conditions, payload)
        if reason is not None:
            refusals.append(f"workflow {route.workflow_id}: {reason}")
        else:
            starts.append(_Start(execution_id=uuid.uuid4(), route=route))
    if starts:
        return _FanOut(starts=starts, outcome="accepted", detail=None)
    if refusals:
        return _FanOut(starts=[], outcome="filtered", detail="; ".join(refusals)[:2000])
    return _FanOut(
        starts=[], outcome="no_match", detail=f"no active subscription to {trigger_key!r}"[:2000]
    )


def _fan_out_arrays(starts: list[_Start]) -> list[list[Any]]:
    """The array parameters of `_start_executions`, in order."""
    jobs = [
        step_job(start.execution_id, start.route.step_id, start.route.entry) for start in starts
    ]
    return [
        [start.execution_id for start in starts],
        [start.route.workflow_id for start in starts],
        [start.route.version_id for start in starts],
        [start.route.step_id for start in starts],
        [start.route.entry.key for start in starts],
        *job_arrays(jobs),
    ]


async def filter_refusal(filter_conditions: dict[str, Any], payload: Any) -> str | None:
    """Why a subscription's filter refuses this payload, or None when the event passes."""
    expression = filter_conditions.get("expression")
    if not expression:
        return None
    try:
        passed = await evaluate_bounded(
            expression, {"trigger": payload}, "filter_conditions.expression"
        )
    except RenderError as error:
        return f"filter failed: {error}"
    return None if passed else f"filter `{expression}` is false"


PENDING_EVENT: Final = """
SELECT trigger_key, payload::text AS payload
FROM trigger_event WHERE id = $1 AND outcome = 'pending'
"""


async def fan_out_recorded_event(
    connection: Connection, event_id: uuid.UUID
) -> AcceptedEvent | None:
    """Fan out an event recorded by a database trigger (outcome `pending`); call inside the
    transaction that completes its job. None when it was fanned out already (the write
    matches only a pending event, so a concurrent fan-out of the same event starts nothing)."""
    row = await connection.fetchrow(PENDING_EVENT, event_id)
    if row is None:
        return None
    routes = await read_routes(connection, row["trigger_key"])
    fan_out = await _fan_out(routes, row["trigger_key"], msgspec.json.decode(row["payload"]))
    written = await connection.fetchrow(
        FAN_OUT_RECORDED_EVENT, event_id, fan_out.outcome, fan_out.detail,
        *_fan_out_arrays(fan_out.starts),
    )  # fmt: skip
    if written is None or written["event_id"] is None:
        return None
    return AcceptedEvent(
        trigger_key=row["trigger_key"],
        event_id=event_id,
        execution_ids=[start.execution_id for start in fan_out.starts],
        outcome=fan_out.outcome,
    )
