"""The one way executions start: record an event and fan it out, in one write.

Events API calls, webhooks, schedule fires, database changes and manual runs all come through
here. The `trigger_event` row and the executions it starts (each with its entry step and that
step's job) are written by ONE statement (`sql.RECORD_EVENT`), so they commit together before
the caller answers 2xx: an acknowledged event is never lost (even with no worker running: the
jobs wait in the queue). Called outside a transaction, that statement is its own transaction;
inside one, it commits with the caller's other writes. A repeated idempotency key for the same
trigger finds the first event and starts nothing. Each active subscription of the trigger key
whose filter passes (`server.engine.filters`) starts one execution on its workflow's latest
published version (`sql.routes_json`, read just before in one statement, or by the webhook
intake together with its endpoint); events that match nothing, or that every filter refuses,
are kept with the reason. A manual run is an event of the `manual` trigger whose one route is
its workflow (`run_manually`).

An event with a correlation key also resumes the `wait_for_event` steps waiting for it, in the
same transaction, after the advisory lock of its (trigger key, correlation key)
(`server.runs.event_waits` explains why that lock comes first); without one, nothing of this
runs and the intake is one statement as before.

Routes carry their version's `concurrency` option. When a start counts in a concurrency group,
or a schedule fire carries an overlap policy, `server.runs.concurrency.place` decides, under
the groups' advisory locks and inside a transaction (the caller's, or one opened here), whether
each execution starts, waits held (no entry step, no job) or is skipped; skips are recorded in
the event's `outcome_detail`, and the outcome is `skipped` when nothing started. Events whose
workflows have no such option take none of these locks and no transaction block.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
import structlog

from server import tracing
from server.db.pool import transaction
from server.engine.document import Concurrency, Step, StepKind
from server.engine.filters import filter_refusal
from server.errors import ConflictError, NotFoundError
from server.queue.client import job_arrays
from server.runs import sql
from server.runs.concurrency import Arrival, Fate, Overlap, place
from server.runs.event_waits import lock_wait_key, wait_key_of
from server.runs.jobs import step_job
from server.runs.traces import describe_intake, intake_span
from server.runs.wait_resumes import resume_event_waiters
from server.statements import Connection

log = structlog.get_logger(__name__)

MANUAL_TRIGGER_KEY: Final = "manual"
MAX_DETAIL_CHARS: Final = 2000


class AcceptedEvent(msgspec.Struct, frozen=True, kw_only=True):
    trigger_key: str
    event_id: uuid.UUID
    execution_ids: list[uuid.UUID]
    duplicate: bool = False
    outcome: str = "accepted"
    detail: str | None = None  # why nothing, or not everything, started
    resumed_execution_ids: list[uuid.UUID] = msgspec.field(default_factory=list)


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """An active subscription's workflow, version and entry step, and the version's
    `concurrency` option (`sql.routes_json`)."""

    workflow_id: uuid.UUID
    filter_conditions: dict[str, Any]
    version_id: uuid.UUID
    step_id: uuid.UUID
    entry: Step
    concurrency: Concurrency | None = None


def routes_from_json(text: str) -> list[Route]:
    """Decode `sql.routes_json`."""
    return [
        Route(
            workflow_id=uuid.UUID(workflow_id),
            filter_conditions=filter_conditions or {},
            version_id=uuid.UUID(version_id),
            step_id=uuid.UUID(step_id),
            entry=Step(key=key, kind=StepKind(kind), action_key=action_key, cfg=cfg),
            concurrency=None if concurrency is None else msgspec.convert(concurrency, Concurrency),
        )
        for (
            workflow_id, filter_conditions, version_id, step_id, key, kind, action_key, cfg,
            concurrency,
        ) in msgspec.json.decode(text)
    ]  # fmt: skip


async def read_routes(connection: Connection, trigger_key: str) -> list[Route]:
    return routes_from_json(await sql.ROUTES.fetchval(connection, trigger_key=trigger_key))


class _Start(msgspec.Struct, frozen=True, kw_only=True):
    """A route whose filter passed: the execution it starts (held: it waits for admission)."""

    execution_id: uuid.UUID
    route: Route
    held: bool = False
    concurrency_key: str | None = None
    overlap_key: str | None = None


class _FanOut(msgspec.Struct, frozen=True, kw_only=True):
    starts: list[_Start]
    outcome: str
    detail: str | None
    grouped: bool = False  # some starts count in groups: the statements' grouped form


async def accept_event(
    connection: Connection,
    *,
    trigger_key: str,
    trigger_type: str,
    payload: Any,
    idempotency_key: str | None = None,
    source: dict[str, Any] | None = None,
    routes: list[Route] | None = None,
    correlation_key: str | None = None,
    overlap: Overlap | None = None,
) -> AcceptedEvent:
    """Record one event and start the executions it triggers (see the module docstring).
    `routes`: the trigger key's routes if the caller has read them (else they are read).
    `overlap`: a schedule fire's overlap group and policy.

    With a `correlation_key`, in one transaction (a savepoint inside the caller's): the
    advisory lock of (trigger key, correlation key) first, then the event, then every step
    waiting for it resumes (`server.runs.wait_resumes`); a duplicate resumes nothing."""
    if correlation_key is None:
        return await _accept(
            connection, trigger_key=trigger_key, trigger_type=trigger_type, payload=payload,
            idempotency_key=idempotency_key, source=source, routes=routes, correlation_key=None,
            overlap=overlap,
        )  # fmt: skip
    async with connection.transaction():
        await lock_wait_key(connection, wait_key_of(trigger_key, correlation_key))
        accepted = await _accept(
            connection, trigger_key=trigger_key, trigger_type=trigger_type, payload=payload,
            idempotency_key=idempotency_key, source=source, routes=routes,
            correlation_key=correlation_key, overlap=overlap,
        )  # fmt: skip
        if accepted.duplicate:
            return accepted
        resumed = await resume_event_waiters(
            connection, trigger_key=trigger_key, correlation_key=correlation_key,
            event_id=accepted.event_id, payload=payload,
        )  # fmt: skip
        return msgspec.structs.replace(accepted, resumed_execution_ids=resumed)


async def _accept(
    connection: Connection,
    *,
    trigger_key: str,
    trigger_type: str,
    payload: Any,
    idempotency_key: str | None,
    source: dict[str, Any] | None,
    routes: list[Route] | None,
    correlation_key: str | None,
    overlap: Overlap | None,
) -> AcceptedEvent:
    """The event and its executions. Executions of workflows with a concurrency option, or with
    `overlap`, are placed under their groups' locks (`server.runs.concurrency`): in the
    caller's transaction, or in one opened here."""
    with intake_span(trigger_key, trigger_type) if tracing.ENABLED else tracing.NO_SPAN as span:
        if routes is None:
            routes = await read_routes(connection, trigger_key)
        fan_out = await _fan_out(routes, trigger_key, payload)
        event = _NewEvent(
            trigger_key=trigger_key, trigger_type=trigger_type, payload=payload,
            idempotency_key=idempotency_key, source=source, correlation_key=correlation_key,
        )  # fmt: skip
        if not _grouped(fan_out, overlap):
            accepted = await _record(connection, fan_out, event)
        else:
            async with _transaction(connection):
                fan_out = await _placed(connection, fan_out, payload, overlap)
                accepted = await _record(connection, fan_out, event)
        if span is not None:
            describe_intake(span, accepted)
        return accepted


class _NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    trigger_key: str
    trigger_type: str
    payload: Any
    idempotency_key: str | None
    source: dict[str, Any] | None
    correlation_key: str | None


def _grouped(fan_out: _FanOut, overlap: Overlap | None) -> bool:
    """Whether a start counts in a group (the common case, none, costs nothing more)."""
    if not fan_out.starts:
        return False
    return overlap is not None or any(start.route.concurrency for start in fan_out.starts)


@asynccontextmanager
async def _transaction(connection: Connection) -> AsyncIterator[None]:
    """The caller's transaction if there is one (group locks last until it ends), else one."""
    if connection.is_in_transaction():
        yield
        return
    async with connection.transaction():
        yield


async def _record(connection: Connection, fan_out: _FanOut, event: _NewEvent) -> AcceptedEvent:
    """Write the event and the executions it starts (`sql.RECORD_EVENT`)."""
    event_id = uuid.uuid4()
    trigger_key, idempotency_key = event.trigger_key, event.idempotency_key
    statement = sql.RECORD_EVENT_GROUPED if fan_out.grouped else sql.RECORD_EVENT
    row = await statement.fetchrow(
        connection, event_id=event_id, trigger_key=trigger_key, trigger_type=event.trigger_type,
        payload=msgspec.json.encode(event.payload).decode(), idempotency_key=idempotency_key,
        source=msgspec.json.encode(event.source or {}).decode(), outcome=fan_out.outcome,
        outcome_detail=fan_out.detail, correlation_key=event.correlation_key,
        traceparent=tracing.current_traceparent() if tracing.ENABLED else None,
        **_start_args(fan_out),
    )  # fmt: skip
    if row is None or row["event_id"] is None:
        first = await sql.FIRST_EVENT.fetchrow(
            connection, trigger_key=trigger_key, idempotency_key=idempotency_key
        )
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
        detail=fan_out.detail,
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
        return _FanOut(starts=[], outcome="filtered", detail="; ".join(refusals)[:MAX_DETAIL_CHARS])
    return _FanOut(
        starts=[],
        outcome="no_match",
        detail=f"no active subscription to {trigger_key!r}"[:MAX_DETAIL_CHARS],
    )


async def _placed(
    connection: Connection, fan_out: _FanOut, payload: Any, overlap: Overlap | None
) -> _FanOut:
    """The fan-out with each start placed in its groups: started, held, or skipped (then it
    is no start; the event's detail says why, and its outcome is `skipped` if none is left)."""
    placements = await place(
        connection,
        [
            Arrival(workflow_id=start.route.workflow_id, concurrency=start.route.concurrency)
            for start in fan_out.starts
        ],
        payload,
        overlap,
    )
    starts = [
        msgspec.structs.replace(
            start,
            held=placement.fate is Fate.HOLD,
            concurrency_key=placement.concurrency_key,
            overlap_key=placement.overlap_key,
        )
        for start, placement in zip(fan_out.starts, placements, strict=True)
        if placement.fate is not Fate.SKIP
    ]
    skips = [placement.reason or "" for placement in placements if placement.fate is Fate.SKIP]
    if not skips:
        return msgspec.structs.replace(fan_out, starts=starts, grouped=True)
    detail = ("skipped: " + "; ".join(skips))[:MAX_DETAIL_CHARS]
    return _FanOut(
        starts=starts, outcome="accepted" if starts else "skipped", detail=detail, grouped=True
    )


def _start_args(fan_out: _FanOut) -> dict[str, Any]:
    """The named parameters of the executions an event starts (`sql._start_executions`):
    jobs for the entry steps of the executions not held."""
    starts = fan_out.starts
    jobs = [
        step_job(start.execution_id, start.route.step_id, start.route.entry)
        for start in starts
        if not start.held
    ]
    args: dict[str, Any] = {
        "execution_ids": [start.execution_id for start in starts],
        "workflow_ids": [start.route.workflow_id for start in starts],
        "version_ids": [start.route.version_id for start in starts],
        "entry_step_ids": [start.route.step_id for start in starts],
        "entry_step_keys": [start.route.entry.key for start in starts],
        **job_arrays(jobs),
    }
    if fan_out.grouped:
        args["held"] = [start.held for start in starts]
        args["concurrency_keys"] = [start.concurrency_key for start in starts]
        args["overlap_keys"] = [start.overlap_key for start in starts]
    return args


async def fan_out_recorded_event(
    connection: Connection, event_id: uuid.UUID
) -> AcceptedEvent | None:
    """Fan out an event recorded by a database trigger (outcome `pending`); call inside the
    transaction that completes its job. None when it was fanned out already (the write
    matches only a pending event, so a concurrent fan-out of the same event starts nothing)."""
    row = await sql.PENDING_EVENT.fetchrow(connection, event_id=event_id)
    if row is None:
        return None
    trigger_key = row["trigger_key"]
    with intake_span(trigger_key, "database") if tracing.ENABLED else tracing.NO_SPAN as span:
        routes = await read_routes(connection, trigger_key)
        payload = msgspec.json.decode(row["payload"])
        fan_out = await _fan_out(routes, trigger_key, payload)
        if _grouped(fan_out, None):
            fan_out = await _placed(connection, fan_out, payload, None)
        statement = (
            sql.FAN_OUT_RECORDED_EVENT_GROUPED if fan_out.grouped else sql.FAN_OUT_RECORDED_EVENT
        )
        written = await statement.fetchrow(
            connection, event_id=event_id, outcome=fan_out.outcome, outcome_detail=fan_out.detail,
            traceparent=tracing.current_traceparent() if tracing.ENABLED else None,
            **_start_args(fan_out),
        )  # fmt: skip
        if written is None or written["event_id"] is None:
            return None
        accepted = AcceptedEvent(
            trigger_key=trigger_key,
            event_id=event_id,
            execution_ids=[start.execution_id for start in fan_out.starts],
            outcome=fan_out.outcome,
            detail=fan_out.detail,
        )
        if span is not None:
            describe_intake(span, accepted)
        return accepted


async def run_manually(
    workflow_id: uuid.UUID, run_input: Any, *, source: dict[str, str] | None = None
) -> AcceptedEvent:
    """Start the workflow's latest published version now with `run_input` as its trigger
    payload: an event of the `manual` trigger (its `source` names the workflow, and what asked
    for the run when given, a replay) whose one route is this workflow.

    Raises:
        NotFoundError: no such workflow, or it has no published version.
        ConflictError: the workflow is inactive, or its concurrency limit skipped the run
            (`overflow: skip`; the run's event is kept with the reason).
    """
    async with transaction() as tx:
        connection: Connection = tx.connection
        row = await sql.WORKFLOW_ROUTE.fetchrow(connection, workflow_id=workflow_id)
        if row is None:
            raise NotFoundError(
                f"workflow {workflow_id} not found or has no published version; publish one first"
            )
        if not row["is_active"]:
            raise ConflictError(f"workflow {workflow_id} is inactive; set is_active to run it")
        accepted = await accept_event(
            connection,
            trigger_key=MANUAL_TRIGGER_KEY,
            trigger_type="manual",
            payload=run_input,
            source={**(source or {}), "workflow_id": str(workflow_id)},
            routes=routes_from_json(row["routes"]),
        )
    if not accepted.execution_ids:
        raise ConflictError(
            f"workflow {workflow_id} did not start: {accepted.detail}; event "
            f"{accepted.event_id} records it; run it again once an execution has ended"
        )
    return accepted
