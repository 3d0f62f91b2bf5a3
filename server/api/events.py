"""`/api/v1/events`: send an event for a registered `event` trigger source; list, read and
replay the events of every trigger.

An event may carry a `correlation_key`: it resumes every `wait_for_event` step waiting for its
trigger key and that key (listed in `resumed_execution_ids`), and a wait that begins later in
an execution started before the event finds it (`server.runs.event_waits`).

The answer (202) comes after the event and the executions it starts are committed. A repeated
`idempotency_key` for the same trigger answers with the first event and its executions and
starts nothing new, also when the two requests race. A replay sends a recorded event's payload
again through the same intake, as a new event (no idempotency key; its `source` names the
original), to whatever subscribes to its trigger key now: after fixing a workflow forward, the
event that found it broken runs it again. A manual run's event is replayed as a new manual run
of the same workflow.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from server.api.auth import require_trigger_key
from server.api.deps import Injected, Resources
from server.api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, page, time_and_id
from server.api.problems import problem
from server.db import events
from server.db.events import EventView
from server.db.registry import trigger_type_of
from server.db.trigger_health import IntakeOutcome
from server.engine.document import TriggerKey
from server.runs.event_waits import MAX_CORRELATION_KEY_LENGTH
from server.runs.intake import accept_event
from server.runs.replay import replay_event

UNKNOWN_EVENT_SOURCE = "(unknown event source)"


class EventIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trigger_key: TriggerKey
    payload: Any = msgspec.field(default_factory=dict)
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=300)] | None = None
    correlation_key: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=MAX_CORRELATION_KEY_LENGTH,
                description="resumes the wait_for_event steps waiting for this trigger_key "
                "and correlation key; a later wait of an execution started before the event "
                "finds it too",
            ),
        ]
        | None
    ) = None


class EventAccepted(msgspec.Struct, frozen=True, kw_only=True):
    event_id: uuid.UUID
    execution_ids: list[uuid.UUID]
    duplicate: bool
    outcome: str
    # The executions whose waiting steps this event resumed (with a correlation_key).
    resumed_execution_ids: list[uuid.UUID] = msgspec.field(default_factory=list)


class EventController(Controller):
    path = "/events"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("events",)

    @post("/", status_code=HTTP_202_ACCEPTED, opt={"role": "ingest", "audit": "event.send"})
    async def send_event(
        self,
        data: JSONBody[EventIn],
        resources: Injected[Resources],
        request: Request[Any, Any, Any],
    ) -> EventAccepted:
        """Record an event and start every subscribed workflow whose filter passes. An ingest
        token held to some trigger keys may send to those only (403 otherwise)."""
        require_trigger_key(request, data.trigger_key)
        recorder = resources.recorder
        if await trigger_type_of(data.trigger_key) != "event":
            # Counted under one fixed key: unknown keys must not grow metrics or health rows.
            recorder.record(
                UNKNOWN_EVENT_SOURCE, IntakeOutcome.REFUSED,
                error=f"not an event source: {data.trigger_key[:100]!r}",
            )  # fmt: skip
            raise problem(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"{data.trigger_key!r} is not a registered event source; register it with "
                'POST /api/v1/registry/triggers {"trigger_key": ..., "type": "event"}',
                extra={"errors": [{"field": "trigger_key", "message": "unknown event source"}]},
            )
        # One statement writes the event and its executions (with a correlation key, or when a
        # workflow's concurrency limit needs its group locks, accept_event opens a transaction
        # itself): no transaction block needed.
        async with resources.pool.acquire() as connection:
            accepted = await accept_event(
                connection,
                trigger_key=data.trigger_key,
                trigger_type="event",
                payload=data.payload,
                idempotency_key=data.idempotency_key,
                source={"via": "api"},
                correlation_key=data.correlation_key,
            )
        outcome = (
            IntakeOutcome.DEDUPLICATED if accepted.duplicate else IntakeOutcome(accepted.outcome)
        )
        recorder.record(data.trigger_key, outcome)
        return EventAccepted(
            event_id=accepted.event_id,
            execution_ids=accepted.execution_ids,
            duplicate=accepted.duplicate,
            outcome=outcome.value,
            resumed_execution_ids=accepted.resumed_execution_ids,
        )

    @get("/")
    async def list_events(
        self,
        pool: Injected[asyncpg.Pool],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        trigger_key: FromQuery[str | None] = None,
        since: FromQuery[dt.datetime | None] = None,
    ) -> Page[EventView]:
        """Events of every trigger, newest first, with their outcome (`accepted`, `no_match`,
        `filtered`, `skipped`, `pending`), its detail (why nothing, or not everything,
        started) and the executions they started; filter by
        `trigger_key` and `since` (received at or after)."""
        async with pool.acquire() as connection:
            items = await events.list_events(
                connection, limit=limit + 1, before=time_and_id(cursor),
                trigger_key=trigger_key, since=since,
            )  # fmt: skip
        return page(items, limit, lambda item: (item.received_at, item.id))

    @get("/{event_id:uuid}")
    async def get_event(
        self, pool: Injected[asyncpg.Pool], event_id: FromPath[uuid.UUID]
    ) -> EventView:
        """One event with its outcome, detail and execution ids."""
        async with pool.acquire() as connection:
            return await events.get_event(connection, event_id)

    @post(
        "/{event_id:uuid}/replay",
        status_code=HTTP_202_ACCEPTED,
        opt={"role": "operator", "audit": "event.replay"},
    )
    async def replay_event(
        self, event_id: FromPath[uuid.UUID], resources: Injected[Resources]
    ) -> EventAccepted:
        """Accept the event's payload again as a new event of its trigger key, through the
        normal intake (the subscriptions and latest published versions of now); a manual
        run's event starts its workflow again. Answers like POST /events."""
        accepted = await replay_event(event_id)
        outcome = IntakeOutcome(accepted.outcome)
        resources.recorder.record(accepted.trigger_key, outcome)
        return EventAccepted(
            event_id=accepted.event_id,
            execution_ids=accepted.execution_ids,
            duplicate=False,
            outcome=outcome.value,
            resumed_execution_ids=accepted.resumed_execution_ids,
        )
