"""Replaying a recorded event: its payload accepted again as a new event of the same source.

The new event goes through the whole intake (`accept_event`: today's subscriptions, filters and
latest published versions), without an idempotency key, and records which event it replays in
its `source`. Used by `switchyard events replay`.
"""

from __future__ import annotations

import uuid
from typing import Final

import msgspec

from server.db.intake import AcceptedEvent, accept_event
from server.errors import NotFoundError
from server.queue.client import Connection

RECORDED_EVENT: Final = """
SELECT trigger_key, trigger_type, payload::text AS payload FROM trigger_event WHERE id = $1
"""


async def replay_event(connection: Connection, event_id: uuid.UUID) -> AcceptedEvent:
    """Accept the payload of event `event_id` again; call inside the caller's transaction."""
    row = await connection.fetchrow(RECORDED_EVENT, event_id)
    if row is None:
        raise NotFoundError(f"event {event_id} not found; it may have been pruned (RETENTION_DAYS)")
    return await accept_event(
        connection,
        trigger_key=row["trigger_key"],
        trigger_type=row["trigger_type"],
        payload=msgspec.json.decode(row["payload"]),
        source={"via": "replay", "replay_of": str(event_id)},
    )
