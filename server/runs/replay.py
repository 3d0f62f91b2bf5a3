"""Replaying a recorded event: its payload accepted again as a new event of the same source.

The new event goes through the whole intake (`accept_event`: today's subscriptions, filters and
latest published versions), without an idempotency key but with the original's correlation key
(resuming what waits for it now), and records which event it replays in its `source`. A manual run's event (`trigger_type` manual) starts its workflow again as a new
manual run. One place for both `POST /api/v1/events/{id}/replay` and `switchyard events replay`.
"""

from __future__ import annotations

import uuid

from server.db import events
from server.db.pool import asyncpg_pool, piccolo_database, transaction
from server.runs.intake import AcceptedEvent, accept_event, run_manually


async def replay_event(event_id: uuid.UUID) -> AcceptedEvent:
    """Accept the payload of event `event_id` again (see the module docstring)."""
    pool = asyncpg_pool(piccolo_database())
    async with pool.acquire() as connection:
        original = await events.get_event(connection, event_id)
    source = {"via": "replay", "replay_of": str(event_id)}
    workflow_id = original.source.get("workflow_id")
    if original.trigger_type == "manual" and isinstance(workflow_id, str):
        return await run_manually(uuid.UUID(workflow_id), original.payload, source=source)
    async with transaction() as tx:
        return await accept_event(
            tx.connection,
            trigger_key=original.trigger_key,
            trigger_type=original.trigger_type,
            payload=original.payload,
            source=source,
            correlation_key=original.correlation_key,
        )
