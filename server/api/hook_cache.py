"""Webhook endpoints with their routes, kept per path by the API process, dropped on change.

A delivery needs its endpoint (auth, secrets, answer mode) and the routes of its trigger key
(`server.runs.sql.routes_json`); reading them is one of the intake's two statements, and they
change rarely. So while this process listens on `switchyard_config` it keeps them per path:
triggers on webhook_endpoint, workflow_subscription, workflow_definition and workflow_version
notify that channel in every transaction that changes them (delivered at commit), from any
replica or tool, and each notification empties the cache. This process's own successful API
writes empty it too, before their answer leaves (`forget_on_writes`), so a client that changes
an endpoint or a subscription and then sends a delivery never meets the old one. A change made
elsewhere applies here when its notification arrives, normally within a millisecond of the
commit. While the listening connection is down the cache is not used; after it (re)connects
the cache starts empty, since notifications may have been missed meanwhile.

Only endpoints that exist are kept (unknown paths are not, so probing cannot fill memory), at
most MAX_ENTRIES of them. A read that started before an invalidation is not kept after it
(`generation`), so a slow read can never put back what a change just made stale.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from server.db.webhooks import IntakeEndpoint
from server.queue.listener import ChannelListener

CONFIG_CHANNEL: Final = "switchyard_config"
LISTENER_NAME: Final = "config_listener"
MAX_ENTRIES: Final = 10_000
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# API writes that never change an endpoint or a route (they would only empty the cache).
NOT_CONFIG_PATHS: Final = ("/api/v1/events", "/api/v1/tokens")
MIN_REFUSED: Final = 400  # answers from here on changed nothing


class EndpointCache:
    """Endpoints by path while `live` (see the module docstring)."""

    def __init__(self) -> None:
        self._entries: dict[str, IntakeEndpoint] = {}
        self._generation = 0
        self.live = False
        self.hits = 0

    async def endpoint(
        self, path: str, load: Callable[[], Awaitable[IntakeEndpoint | None]]
    ) -> IntakeEndpoint | None:
        """The endpoint at `path`: kept, or `load()`ed (and kept if it exists)."""
        if self.live and (kept := self._entries.get(path)) is not None:
            self.hits += 1
            return kept
        generation = self._generation
        endpoint = await load()
        if endpoint is not None and self.live and generation == self._generation:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[path] = endpoint
        return endpoint

    def forget(self) -> None:
        """Drop everything: something it was read from changed (or may have)."""
        self._generation += 1
        self._entries.clear()

    def connected(self) -> None:
        """The listener (re)connected: start empty, then keep again."""
        self.forget()
        self.live = True

    def disconnected(self) -> None:
        """The listener lost its connection: changes may go unheard, so keep nothing."""
        self.live = False
        self.forget()

    def listener(self, dsn: str, *, reconnect_delay_seconds: float) -> ChannelListener:
        """The LISTEN loop that keeps this cache honest; run it supervised."""
        return _ConfigListener(self, dsn, reconnect_delay_seconds=reconnect_delay_seconds)


class _ConfigListener(ChannelListener):
    def __init__(self, cache: EndpointCache, dsn: str, *, reconnect_delay_seconds: float) -> None:
        super().__init__(
            dsn,
            CONFIG_CHANNEL,
            name=LISTENER_NAME,
            on_notify=lambda _payload: cache.forget(),
            on_connect=cache.connected,
            on_disconnect=cache.disconnected,
            reconnect_delay_seconds=reconnect_delay_seconds,
        )


def forget_on_writes(cache: EndpointCache) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware: an API request that may change configuration (any method but GET, HEAD
    and OPTIONS under /api/v1) empties `cache` when its successful answer starts, after its
    transaction committed and before the client can send anything else.

    Only answers below 400 count: a refused request changed nothing, and a request without a
    valid token is always refused (401 from the router's guard, 404 or 405 off its routes), so
    anonymous traffic cannot keep emptying the cache and send every delivery to the database.
    A write that failed after its commit (a 5xx) is still heard through its notification.
    """

    def middleware(app: ASGIApp) -> ASGIApp:
        async def forgetting(scope: Scope, receive: Receive, send: Send) -> None:
            if (
                scope["type"] != ScopeType.HTTP
                or scope.get("method", "GET") in SAFE_METHODS
                or not scope["path"].startswith("/api/v1/")
                or scope["path"].startswith(NOT_CONFIG_PATHS)
            ):
                await app(scope, receive, send)
                return

            async def send_after_forgetting(message: Message) -> None:
                if message["type"] == "http.response.start" and message["status"] < MIN_REFUSED:
                    cache.forget()
                await send(message)

            await app(scope, receive, send_after_forgetting)

        return forgetting

    return middleware
