"""HTTP limits on the wire: uvicorn's httptools protocol, counting bytes and time as they arrive.

`limited_protocol(HttpLimits.from_settings(settings))` is the class handed to
`uvicorn.Config(http=...)`. Every limit is enforced before the parser buffers what it refuses:
the request head (request line and headers) is fed to httptools only up to
HTTP_MAX_HEADER_BYTES, so a 64 MB header costs 16 KB of parsing, not a quadratic concatenation
that stalls the loop; a head must arrive within HTTP_HEADER_TIMEOUT_SECONDS of its first byte
(of the connection, for a first request) and a body within HTTP_BODY_TIMEOUT_SECONDS of its head;
a body past MAX_PAYLOAD_BYTES is answered by the app (413) and the connection is closed instead
of reading the rest. Past HTTP_MAX_CONNECTIONS, the longest-idle keep-alive connection is closed
to make room; without one, the next PROBE_CONNECTIONS connections may only ask for /health or
/ready (anything else is answered 503), and any further one is answered 503 at once. A refused
connection is half-closed and its remaining input read and dropped for up to LINGER_SECONDS, so
that the client reads the answer instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, ClassVar, Final

import httptools
import msgspec
import structlog
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from config.settings import Settings

log = structlog.get_logger(__name__)

# How long a refused connection's remaining input is read and dropped before it is closed.
LINGER_SECONDS: Final = 2.0
# Connections past the cap that are still read, for the probes only; beyond them: 503 at once.
PROBE_CONNECTIONS: Final = 10
PROBE_PATHS: Final = frozenset({b"/health", b"/ready"})
# Orders connections by when they fell idle (the loop clock ties within a millisecond on uvloop).
_IDLE_ORDER: Final = itertools.count()


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits one server enforces; the settings of the same names document them."""

    max_header_bytes: int
    max_headers: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    keepalive_timeout_seconds: float
    max_connections: int
    max_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout_seconds=settings.http_header_timeout_seconds,
            body_timeout_seconds=settings.http_body_timeout_seconds,
            keepalive_timeout_seconds=settings.http_keepalive_timeout_seconds,
            max_connections=settings.http_max_connections,
            max_body_bytes=settings.max_payload_bytes,
        )


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, bound to `limits`."""

    class ConfiguredHttpProtocol(LimitedHttpProtocol):
        pass

    ConfiguredHttpProtocol.limits = limits
    return ConfiguredHttpProtocol


class _RefusedError(Exception):
    """Raised in a parser callback to stop parsing; the protocol keeps the status to answer."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `HttpLimits` (see the module docstring)."""

    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn types it int; call_later takes the float setting as it is.
        self.timeout_keep_alive = self.limits.keepalive_timeout_seconds  # type: ignore[assignment]
        self._reading_head = True  # until the head of the current request is complete
        self._head_started = False  # the parser saw the first byte of the current request
        self._head_bytes = 0
        self._request_line_open = True  # no line end seen yet in this head: 414, not 431
        self._in_body = False
        self._body_bytes = 0
        self._body_over_cap = False
        self._deadline: asyncio.TimerHandle | None = None
        self._refusal: tuple[int | None, str] | None = None  # set by a refusing callback
        self._discarding = False
        self._probe_only = False
        self._idle_rank = 0  # from _IDLE_ORDER when its last response completed

    # Connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never completes a head is closed at the header deadline.
        self._deadline = self.loop.call_later(
            self.limits.header_timeout_seconds, self._head_timed_out
        )
        overflow = len(self.connections) - self.limits.max_connections
        if overflow > 0 and not self._close_longest_idle():
            if overflow > PROBE_CONNECTIONS:
                self._refuse(503, "too many connections, retry shortly", retry_after=True)
            else:
                self._probe_only = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _close_longest_idle(self) -> bool:
        """Close the keep-alive connection idle the longest, if any; True when one was."""
        idle = [
            connection
            for connection in self.connections
            if isinstance(connection, LimitedHttpProtocol)
            and connection.timeout_keep_alive_task is not None
            and not connection.transport.is_closing()
        ]
        if not idle:
            return False
        min(idle, key=lambda connection: connection._idle_rank).timeout_keep_alive_handler()
        return True

    # Bytes in

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._unset_keepalive_if_required()
        while data and not self._discarding and not self.transport.is_closing():
            if not self._reading_head:
                self._feed(data)
                break
            room = self.limits.max_header_bytes - self._head_bytes
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._head_bytes += len(piece)
            if self._request_line_open and b"\n" in piece:
                self._request_line_open = False
            self._feed(piece)
            if self._reading_head and self._head_bytes >= self.limits.max_header_bytes:
                too_long = 414 if self._request_line_open else 431
                self._refuse(too_long, "request line or headers larger than the limit")
        self._arm_deadline()

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no WebSocket routes (ws="none")
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")

    def _arm_deadline(self) -> None:
        """Start the head or body deadline when a head or body is under way without one."""
        if self._deadline is not None or self._discarding or self.transport.is_closing():
            return
        if self._in_body:
            self._deadline = self.loop.call_later(
                self.limits.body_timeout_seconds, self._body_timed_out
            )
        elif self._reading_head and self._head_started:
            self._deadline = self.loop.call_later(
                self.limits.header_timeout_seconds, self._head_timed_out
            )

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._body_bytes = 0
        self._body_over_cap = False

    def on_headers_complete(self) -> None:
        # Counted once the head is complete: the byte budget already bounds what it holds.
        if len(self.headers) > self.limits.max_headers:
            self._refusal = (431, "too many header fields")
            raise _RefusedError
        self._cancel_deadline()
        self._reading_head = self._head_started = False
        self._head_bytes = 0
        self._request_line_open = True
        self._in_body = True
        for name, value in self.headers:
            if name == b"content-length":
                self._body_over_cap = value.isdigit() and int(value) > self.limits.max_body_bytes
        if self._probe_only and httptools.parse_url(self.url).path not in PROBE_PATHS:
            self.limit_concurrency = 0  # uvicorn's own 503 ("Service Unavailable", then close)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            self._body_over_cap = True
        super().on_body(body)
        if self._body_over_cap and self.cycle.response_complete:
            # Answered already: stop reading what is left (see _feed).
            self._refusal = (None, "body larger than MAX_PAYLOAD_BYTES")
            raise _RefusedError

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        self._in_body = False
        self._reading_head = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._idle_rank = next(_IDLE_ORDER)
        super().on_response_complete()
        if self._in_body and self._body_over_cap:
            self._refuse(None, "body larger than MAX_PAYLOAD_BYTES")  # the app answered 413

    # Refusals

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self._head_started:
            self._refuse(408, "request headers not received in time")
        elif not self.transport.is_closing():
            self.transport.close()  # nothing was sent: nobody to answer

    def _body_timed_out(self) -> None:
        self._deadline = None
        self._refuse(408, "request body not received in time")

    def _refuse(self, status: int | None, reason: str, *, retry_after: bool = False) -> None:
        """Answer `status` (unless a response has started), then half-close and linger."""
        if self._discarding or self.transport.is_closing():
            return
        log.debug("http_request_refused", status=status, reason=reason, client=self.client)
        self._discarding = True
        self._cancel_deadline()
        self._unset_keepalive_if_required()
        self.pipeline.clear()
        cycle = self.cycle  # while a head is read: the previous request's, if any
        if self._reading_head:
            answering = status is not None and (cycle is None or cycle.response_complete)
        else:
            answering = status is not None and not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() sees http.disconnect; sends are dropped
            cycle.message_event.set()
        if answering and status is not None:
            self.transport.write(self._answer(status, reason, retry_after=retry_after))
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _answer(self, status: int, reason: str, *, retry_after: bool) -> bytes:
        body = reason.encode("ascii")
        lines = [STATUS_LINE[status]]
        defaults = self.server_state.default_headers
        lines.extend(name + b": " + value + b"\r\n" for name, value in defaults)
        lines.append(b"content-type: text/plain; charset=utf-8\r\n")
        lines.append(b"content-length: %d\r\n" % len(body))
        if retry_after:
            lines.append(b"retry-after: 1\r\n")
        lines.append(b"connection: close\r\n\r\n")
        return b"".join([*lines, body])
