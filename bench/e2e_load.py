"""The end-to-end benchmark's load generators: HTTP/1.1 clients on keep-alive sockets.

`run_load` (closed loop) starts `concurrency` clients against one loopback server; each sends
one request, waits for the whole answer, records it, and sends the next, until the deadline.
`run_paced_load` (open loop) sends at a fixed rate whatever the answers, and times each answer
from when its request was due, so a server that falls behind shows it. Requests are
bounded by count (`max_requests`) and by time, so a run always stops by itself. The client is a
few lines of raw asyncio rather than httpx: at a few thousand requests per second on two cores,
the generator shares the CPU with the server under test, and the less it takes the less it
distorts either system's figures. It speaks just enough HTTP/1.1 for the two servers measured
(Content-Length or chunked bodies, `Connection: close` honoured by reconnecting).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Final

import msgspec

REQUEST_TIMEOUT_SECONDS: Final = 30.0
CONNECT_TIMEOUT_SECONDS: Final = 5.0
# Open loop: an idle keep-alive connection older than this is closed, not reused.
MAX_IDLE_SECONDS: Final = 1.0
# Kept per run: enough to tell what went wrong without keeping every failure.
ERROR_SAMPLES: Final = 5


class Request(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    headers: dict[str, str]
    body: bytes


class Response(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: bytes


# Builds request number `n` (0-based, unique across all clients of one run).
RequestFactory = Callable[[int], Request]


class LoadResult(msgspec.Struct, kw_only=True):
    """What the clients saw. Times are `time.time()` seconds, latencies milliseconds."""

    started_at: float
    stopped_at: float
    latencies_ms: list[float] = msgspec.field(default_factory=list)
    accepted: int = 0  # answers with an accepted status
    refused: int = 0  # other statuses
    errors: int = 0  # timeouts, resets: no answer at all
    samples: list[str] = msgspec.field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.accepted + self.refused + self.errors

    def note(self, sample: str) -> None:
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append(sample)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to a loopback server; reconnects when closed."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, request: Request) -> Response:
        return await self.send("POST", request)

    async def get(self, path: str) -> Response:
        return await self.send("GET", Request(path=path, headers={}, body=b""))

    async def send(self, method: str, request: Request) -> Response:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        head = [
            f"{method} {request.path} HTTP/1.1",
            f"Host: {self._host}:{self._port}",
            f"Content-Length: {len(request.body)}",
            *(f"{name}: {value}" for name, value in request.headers.items()),
        ]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + request.body)
        try:
            return await self._read_response(self._reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise

    async def _read_response(self, reader: asyncio.StreamReader) -> Response:
        status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunks(reader)
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status=status, body=body)

    @staticmethod
    async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16):
            parts.append((await reader.readexactly(size + 2))[:-2])  # the chunk less its CRLF
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
            pass
        return b"".join(parts)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


async def run_load(
    host: str,
    port: int,
    make_request: RequestFactory,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    accepted_statuses: frozenset[int],
) -> LoadResult:
    """Closed loop: `concurrency` clients, each one request at a time, until the deadline.

    At most `max_requests` requests in all. A request in flight at the deadline is waited for
    (so every accepted event is known); none starts after it.
    """
    counter = iter(range(max_requests))
    result = LoadResult(started_at=time.time(), stopped_at=0.0)
    deadline = time.perf_counter() + duration_s

    async def client() -> None:
        connection = HttpConnection(host, port)
        try:
            while time.perf_counter() < deadline:
                number = next(counter, None)
                if number is None:
                    return
                await exchange(result, connection, make_request(number), accepted_statuses)
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.stopped_at = time.time()
    return result


async def run_paced_load(
    host: str,
    port: int,
    make_request: RequestFactory,
    *,
    rate: float,
    duration_s: float,
    max_in_flight: int,
    accepted_statuses: frozenset[int],
) -> LoadResult:
    """Open loop: request n is due at start + n / `rate`, whatever the answers so far, for
    `duration_s`. Each latency counts from when its request was due, not when it could be
    sent, so queueing behind a slow server is measured (no coordinated omission). At most
    `max_in_flight` requests at once, on keep-alive connections opened as needed."""
    result = LoadResult(started_at=time.time(), stopped_at=0.0)
    idle: list[tuple[float, HttpConnection]] = []  # (idle since, connection), newest last
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def connection_for_now() -> HttpConnection:
        """The most recently used idle connection, else a new one. Connections idle for
        MAX_IDLE_SECONDS are closed first: servers close idle keep-alive sockets (Node.js
        after 5 s), and a request sent as one closes would fail without being the server's
        fault."""
        while idle and time.perf_counter() - idle[0][0] > MAX_IDLE_SECONDS:
            await idle.pop(0)[1].close()
        return idle.pop()[1] if idle else HttpConnection(host, port)

    async def one(request: Request, due: float) -> None:
        async with slots:
            connection = await connection_for_now()
            try:
                await exchange(result, connection, request, accepted_statuses, sent=due)
            finally:
                idle.append((time.perf_counter(), connection))

    start = time.perf_counter()
    for number in range(int(rate * duration_s)):
        due = start + number / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(one(make_request(number), due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    for _, connection in idle:
        await connection.close()
    result.stopped_at = time.time()
    return result


async def exchange(
    result: LoadResult,
    connection: HttpConnection,
    request: Request,
    accepted_statuses: frozenset[int],
    *,
    sent: float | None = None,
) -> None:
    """Send one request and record its answer (or its failure) in `result`; the latency
    counts from `sent` (a `time.perf_counter()` instant), by default from now."""
    started = time.perf_counter() if sent is None else sent
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
            response = await connection.post(request)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
        result.errors += 1
        result.note(f"no answer: {error!r}")
        await connection.close()
        return
    result.latencies_ms.append((time.perf_counter() - started) * 1000)
    if response.status in accepted_statuses:
        result.accepted += 1
    else:
        result.refused += 1
        result.note(f"{response.status}: {response.body[:300]!r}")


class ProbeResult(msgspec.Struct, kw_only=True):
    """What a health probe saw: answer times (milliseconds) and failures."""

    latencies_ms: list[float] = msgspec.field(default_factory=list)
    failures: int = 0  # non-2xx answers, timeouts, resets


async def probe_health(
    host: str, port: int, path: str, *, interval_s: float, result: ProbeResult
) -> None:
    """GET `path` every `interval_s` seconds (from one request's start to the next's) on a
    keep-alive connection, recording each answer's time in `result`, until cancelled. A slow
    answer delays the next probe rather than overlapping it: the probe measures how long an
    operator's liveness check waits, not how many it can pile up."""
    connection = HttpConnection(host, port)
    try:
        while True:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                    response = await connection.get(path)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                result.failures += 1
                await connection.close()
            else:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                if not 200 <= response.status < 300:
                    result.failures += 1
            await asyncio.sleep(max(0.0, started + interval_s - time.perf_counter()))
    finally:
        await connection.close()


async def post_once(host: str, port: int, request: Request) -> Response:
    """One request on a fresh connection (set-up checks and warm-up polls)."""
    connection = HttpConnection(host, port)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
            return await connection.post(request)
    finally:
        await connection.close()
