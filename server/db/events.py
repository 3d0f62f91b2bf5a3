"""Reading trigger events for the API: a keyset list, and one event with its executions.

Every intake path records its event (`server.runs.intake`), with its outcome (`accepted`,
`no_match`, `filtered`, `pending` for a database trigger's event not fanned out yet) and the
reason when nothing started; these reads show them, newest first, so a user can see why a
workflow did not run and replay the event once it is fixed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Final

import msgspec

from server.errors import NotFoundError
from server.queue.client import Connection


class EventView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    trigger_key: str
    trigger_type: str
    payload: Any
    idempotency_key: str | None
    source: dict[str, Any]
    outcome: str
    outcome_detail: str | None
    received_at: dt.datetime
    execution_ids: list[uuid.UUID]
    correlation_key: str | None = None


# An event's executions, oldest first (a scalar subquery per event; uses
# workflow_execution_event_idx).
_COLUMNS: Final = """
ev.id, ev.trigger_key, ev.trigger_type, ev.payload::text AS payload, ev.idempotency_key,
ev.source::text AS source, ev.outcome, ev.outcome_detail, ev.received_at, ev.correlation_key,
coalesce((SELECT array_agg(ex.id ORDER BY ex.created_at, ex.id) FROM workflow_execution ex
          WHERE ex.trigger_event_id = ev.id), '{}') AS execution_ids
"""

# Newest first, strictly before the ($1 received_at, $2 id) position when given; optionally
# one trigger key ($3, trigger_event_trigger_time_idx) and received at or after $4.
LIST_EVENTS: Final = f"""
SELECT {_COLUMNS}
FROM trigger_event ev
WHERE ($1::timestamptz IS NULL OR (ev.received_at, ev.id) < ($1, $2::uuid))
  AND ($3::text IS NULL OR ev.trigger_key = $3)
  AND ($4::timestamptz IS NULL OR ev.received_at >= $4)
ORDER BY ev.received_at DESC, ev.id DESC
LIMIT $5
"""  # noqa: S608 - constant SQL only

GET_EVENT: Final = f"SELECT {_COLUMNS} FROM trigger_event ev WHERE ev.id = $1"  # noqa: S608


def _event(row: Any) -> EventView:
    values = dict(row)
    values["payload"] = msgspec.json.decode(values["payload"])
    values["source"] = msgspec.json.decode(values["source"])
    return msgspec.convert(values, EventView)


async def list_events(
    connection: Connection,
    *,
    limit: int,
    before: tuple[dt.datetime, uuid.UUID] | None,
    trigger_key: str | None = None,
    since: dt.datetime | None = None,
) -> list[EventView]:
    received_at, last_id = before if before is not None else (None, None)
    rows = await connection.fetch(LIST_EVENTS, received_at, last_id, trigger_key, since, limit)
    return [_event(row) for row in rows]


async def get_event(connection: Connection, event_id: uuid.UUID) -> EventView:
    row = await connection.fetchrow(GET_EVENT, event_id)
    if row is None:
        raise NotFoundError(f"event {event_id} not found; list events with GET /api/v1/events")
    return _event(row)
