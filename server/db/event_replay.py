"""Replaying a recorded event: its payload accepted again as a new event of the same source.

The new event goes through the whole intake (`accept_event`: today's subscriptions, filters and
latest published versions), without an idempotency key, and records which event it replays in
its `source`. A manual run's event (`trigger_type` manual) starts its workflow again as a new
manual run. Used by `switchyard events replay` (the API's `POST /events/{id}/replay` follows
the same rules).
"""

from __future__ import annotations

import uuid
from typing import Final

import msgspec

from server.db.control import run_manually
from server.db.engine import engine_pool, piccolo_engine, transaction
from server.db.intake import AcceptedEvent, accept_event
from server.errors import NotFoundError

RECORDED_EVENT: Final = """
SELECT trigger_key, trigger_type, payload::text AS payload, source::text AS source
FROM trigger_event WHERE id = $1
"""
EVENT_OF_EXECUTION: Final = "SELECT trigger_event_id FROM workflow_execution WHERE id = $1"


async def replay_event(event_id: uuid.UUID) -> AcceptedEvent:
    """Accept the payload of event `event_id` again (see the module docstring)."""
    async with engine_pool(piccolo_engine()).acquire() as connection:
        row = await connection.fetchrow(RECORDED_EVENT, event_id)
    if row is None:
        raise NotFoundError(f"event {event_id} not found; it may have been pruned (RETENTION_DAYS)")
    payload = msgspec.json.decode(row["payload"])
    workflow_id = msgspec.json.decode(row["source"]).get("workflow_id")
    if row["trigger_type"] == "manual" and isinstance(workflow_id, str):
        execution_id = await run_manually(uuid.UUID(workflow_id), payload)
        async with engine_pool(piccolo_engine()).acquire() as connection:
            new_event_id = await connection.fetchval(EVENT_OF_EXECUTION, execution_id)
        return AcceptedEvent(
            trigger_key=row["trigger_key"], event_id=new_event_id, execution_ids=[execution_id]
        )
    async with transaction() as tx:
        return await accept_event(
            tx.connection,
            trigger_key=row["trigger_key"],
            trigger_type=row["trigger_type"],
            payload=payload,
            source={"via": "replay", "replay_of": str(event_id)},
        )
