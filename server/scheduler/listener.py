"""The scheduler's change line: a dedicated connection that LISTENs on `switchyard_schedules`.

The API sends the id of every created, changed or deleted schedule on that channel inside the
change's transaction, so a replica reloads just that schedule once it is committed. Like the
worker's job listener (`server.queue.listener`, whose channel is fixed), the connection lives
outside the pool, is checked with a query when quiet (it can die silently), and is re-opened
when lost. Notifications sent while it was down are lost: after every (re)connect it asks for a
full resync, and the role resyncs periodically anyway, so a lost notification only delays a
change, never loses it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Final

import asyncpg
import structlog

from server.db.schedules import SCHEDULE_CHANNEL
from server.queue.listener import (
    CHECK_INTERVAL_SECONDS,
    CHECK_TIMEOUT_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    CONNECTION_ERRORS,
)

log = structlog.get_logger(__name__)

SCHEDULE_LISTENER_APPLICATION_NAME: Final = "switchyard-schedule-listener"


class ScheduleListener:
    """Calls `on_change(schedule_id)` per notification and `on_connect()` after each connect.

    Run `run()` as a supervised task; cancel it to stop. `connected` and `connections` are for
    health checks and tests.
    """

    def __init__(
        self,
        dsn: str,
        *,
        on_change: Callable[[uuid.UUID], None],
        on_connect: Callable[[], None],
        reconnect_delay_seconds: float,
    ) -> None:
        self._dsn = dsn
        self._on_change = on_change
        self._on_connect = on_connect
        self._reconnect_delay_seconds = reconnect_delay_seconds
        self.connected = False
        self.connections = 0

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after `reconnect_delay_seconds` when lost."""
        while True:
            try:
                await self._listen_once()
            except CONNECTION_ERRORS as error:
                log.warning("schedule_listener_lost", error=repr(error))
            finally:
                self.connected = False
            await asyncio.sleep(self._reconnect_delay_seconds)

    async def _listen_once(self) -> None:
        connection = await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT_SECONDS,
            command_timeout=CHECK_TIMEOUT_SECONDS,
            server_settings={"application_name": SCHEDULE_LISTENER_APPLICATION_NAME},
        )
        closed = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _: closed.set())
            await connection.add_listener(SCHEDULE_CHANNEL, self._notified)
            self.connected = True
            self.connections += 1
            log.info("schedule_listener_connected", reconnect=self.connections > 1)
            self._on_connect()  # changes sent while we were not listening
            while not connection.is_closed():
                try:
                    await asyncio.wait_for(closed.wait(), CHECK_INTERVAL_SECONDS)
                except TimeoutError:
                    await connection.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_SECONDS)
            log.warning("schedule_listener_lost", error="connection closed")
        finally:
            connection.terminate()

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            schedule_id = uuid.UUID(str(payload))
        except ValueError:
            log.warning("schedule_notification_ignored", payload=str(payload)[:100])
            return
        self._on_change(schedule_id)
