"""ASGI middleware, installed only when tracing is on (`server.tracing`): a SERVER span for each
inbound webhook (`POST /hooks/{path}`) and event (`POST /api/v1/events`), continuing the
sender's trace when the request carries a W3C `traceparent` (a missing or malformed one starts
a new trace). The intake inside it (`server.runs.intake`) records its span as the executions'
parent, so the sender's trace runs on through every step. Every other request passes through
untouched; a 5xx answer marks the span ERROR (a 4xx is the sender's mistake, not ours).
"""

from __future__ import annotations

from typing import Final

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from server import tracing
from server.api.hooks import HOOKS_PREFIX

EVENTS_PATH: Final = "/api/v1/events"
MIN_SERVER_ERROR: Final = 500
_HOOK_PATHS: Final = HOOKS_PREFIX + "/"
_TRACE_HEADERS: Final = frozenset({b"traceparent", b"tracestate"})


def _route(scope: Scope) -> str | None:
    """The traced route of a request, or None."""
    if scope["type"] != ScopeType.HTTP or scope.get("method") != "POST":
        return None
    path: str = scope["path"]
    if path.startswith(_HOOK_PATHS):
        return HOOKS_PREFIX + "/{path}"
    if path.rstrip("/") == EVENTS_PATH:
        return EVENTS_PATH
    return None


def traced_intake(app: ASGIApp) -> ASGIApp:
    async def tracing_intake(scope: Scope, receive: Receive, send: Send) -> None:
        route = _route(scope) if tracing.ENABLED else None
        if route is None:
            await app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADERS
        }
        attributes = {"http.request.method": "POST", "http.route": route, "url.path": scope["path"]}
        with tracing.server_span(f"POST {route}", carrier, attributes) as span:

            async def send_recording_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status: int = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= MIN_SERVER_ERROR:
                        tracing.mark_failed(span, f"answered {status}")
                await send(message)

            await app(scope, receive, send_recording_status)

    return tracing_intake
