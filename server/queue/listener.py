"""The worker's wake-up line: a dedicated connection that LISTENs on the job channel.

LISTEN needs a connection of its own for as long as it listens (a pooled one would lose its
registration on release), so the listener opens one outside the pool and keeps it. Such a
connection can die without a word (server restart, `pg_terminate_backend`, a dropped NAT
entry), so the loop also checks it with a query every few seconds, and reconnects when it is
gone. Notifications sent while it was down are lost: after every (re)connect it wakes the
worker once, and the worker's polling fallback covers the gap meanwhile, so a lost wake-up only
delays a job by the poll interval, never loses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import asyncpg
import structlog

from server.queue.sql import JOB_CHANNEL

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_SECONDS: Final = 10.0
# A liveness query this often notices a connection that died silently.
CHECK_INTERVAL_SECONDS: Final = 5.0
CHECK_TIMEOUT_SECONDS: Final = 5.0
# Errors that mean "the connection is gone or unusable": reconnect, never crash the loop.
CONNECTION_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # the protocol left mid-operation by a connection that broke
)


def application_name(listener_name: str) -> str:
    """The application_name a listener's connection shows in pg_stat_activity."""
    return "switchyard-" + listener_name.replace("_", "-")


JOB_LISTENER_NAME: Final = "job_listener"
LISTENER_APPLICATION_NAME: Final = application_name(JOB_LISTENER_NAME)


class ChannelListener:
    """Calls `on_notify(payload)` for every notification on `channel`, `on_connect()` after
    each (re)connect, when notifications may have been missed, and `on_disconnect()` when the
    connection is found gone (or the listener stops).

    Run `run()` as a supervised task; cancel it to stop. `connected`, `connections` and
    `notifications` describe its state for health checks and tests. `name` prefixes its log
    events (`<name>_connected`, `<name>_lost`) and its connection's application_name.
    """

    def __init__(
        self,
        dsn: str,
        channel: str,
        *,
        name: str,
        on_notify: Callable[[str], None],
        on_connect: Callable[[], None],
        reconnect_delay_seconds: float,
        on_disconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._name = name
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._reconnect_delay_seconds = reconnect_delay_seconds
        self.connected = False
        self.connections = 0
        self.notifications = 0

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after `reconnect_delay_seconds` when lost."""
        while True:
            try:
                await self._listen_once()
            except CONNECTION_ERRORS as error:
                log.warning(f"{self._name}_lost", error=repr(error))
            finally:
                self.connected = False
                self._on_disconnect()
            await asyncio.sleep(self._reconnect_delay_seconds)

    async def _listen_once(self) -> None:
        connection = await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT_SECONDS,
            command_timeout=CHECK_TIMEOUT_SECONDS,
            server_settings={"application_name": application_name(self._name)},
        )
        closed = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _: closed.set())
            await connection.add_listener(self._channel, self._notified)
            self.connected = True
            self.connections += 1
            log.info(f"{self._name}_connected", reconnect=self.connections > 1)
            self._on_connect()  # anything sent while we were not listening
            await self._watch(connection, closed)
        finally:
            connection.terminate()

    async def _watch(self, connection: asyncpg.Connection, closed: asyncio.Event) -> None:
        """Return when the connection is closed; check it with a query when it is quiet."""
        while not connection.is_closed():
            try:
                await asyncio.wait_for(closed.wait(), CHECK_INTERVAL_SECONDS)
            except TimeoutError:
                await connection.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_SECONDS)
        log.warning(f"{self._name}_lost", error="connection closed")

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        self.notifications += 1
        self._on_notify(str(payload))


class JobListener(ChannelListener):
    """Wakes the worker (`on_wakeup`) on every job notification and after each connect."""

    def __init__(
        self, dsn: str, on_wakeup: Callable[[], None], *, reconnect_delay_seconds: float
    ) -> None:
        super().__init__(
            dsn,
            JOB_CHANNEL,
            name=JOB_LISTENER_NAME,
            on_notify=lambda _payload: on_wakeup(),
            on_connect=on_wakeup,
            reconnect_delay_seconds=reconnect_delay_seconds,
        )
