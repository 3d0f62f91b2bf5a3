"""The scheduler's change line: a dedicated connection that LISTENs on `switchyard_schedules`.

The API sends the id of every created, changed or deleted schedule on that channel inside the
change's transaction, so a replica reloads just that schedule once it is committed. It is a
`server.queue.listener.ChannelListener`, like the worker's job listener: the connection lives
outside the pool, is checked with a query when quiet (it can die silently), and is re-opened
when lost. Notifications sent while it was down are lost: after every (re)connect it asks for a
full resync, and the role resyncs periodically anyway, so a lost notification only delays a
change, never loses it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Final

import structlog

from server.db.schedules import SCHEDULE_CHANNEL
from server.queue.listener import ChannelListener, application_name

log = structlog.get_logger(__name__)

SCHEDULE_LISTENER_NAME: Final = "schedule_listener"
SCHEDULE_LISTENER_APPLICATION_NAME: Final = application_name(SCHEDULE_LISTENER_NAME)


class ScheduleListener(ChannelListener):
    """Calls `on_change(schedule_id)` per notification and `on_connect()` after each connect."""

    def __init__(
        self,
        dsn: str,
        *,
        on_change: Callable[[uuid.UUID], None],
        on_connect: Callable[[], None],
        reconnect_delay_seconds: float,
    ) -> None:
        def changed(payload: str) -> None:
            try:
                schedule_id = uuid.UUID(payload)
            except ValueError:
                log.warning("schedule_notification_ignored", payload=payload[:100])
                return
            on_change(schedule_id)

        super().__init__(
            dsn,
            SCHEDULE_CHANNEL,
            name=SCHEDULE_LISTENER_NAME,
            on_notify=changed,
            on_connect=on_connect,
            reconnect_delay_seconds=reconnect_delay_seconds,
        )
