"""`POST /api/v1/events`: an event for a registered `event` trigger source.

The answer (202) comes after the event and the executions it starts are committed. A repeated
`idempotency_key` for the same trigger answers with the first event and its executions and
starts nothing new, also when the two requests race.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from server.api.problems import problem
from server.db.engine import transaction
from server.db.intake import accept_event
from server.db.registry import trigger_type_of
from server.db.trigger_health import IntakeOutcome, IntakeRecorder
from server.engine.document import TriggerKey

UNKNOWN_EVENT_SOURCE = "(unknown event source)"


class EventIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trigger_key: TriggerKey
    payload: Any = msgspec.field(default_factory=dict)
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=300)] | None = None


class EventAccepted(msgspec.Struct, frozen=True, kw_only=True):
    event_id: uuid.UUID
    execution_ids: list[uuid.UUID]
    duplicate: bool
    outcome: str


class EventController(Controller):
    path = "/events"
    tags = ("events",)

    @post("/", status_code=HTTP_202_ACCEPTED)
    async def send_event(self, data: JSONBody[EventIn], state: State) -> EventAccepted:
        """Record an event and start every subscribed workflow whose filter passes."""
        recorder: IntakeRecorder = state.intake_recorder
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
        async with transaction() as tx:
            accepted = await accept_event(
                tx.connection,
                trigger_key=data.trigger_key,
                trigger_type="event",
                payload=data.payload,
                idempotency_key=data.idempotency_key,
                source={"via": "api"},
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
        )
