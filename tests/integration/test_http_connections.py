"""The connection cap of a running `switchyard run` (HTTP_MAX_CONNECTIONS=4), over raw sockets.

Past the cap an idle keep-alive connection makes room; without one, the next connections may
only reach the probes (/health, /ready) and get 503 for anything else; past those, 503 at once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from server.http_limits import PROBE_CONNECTIONS
from tests.support.processes import ServerProcess, environment, switchyard_run
from tests.support.raw_http import closed_within, connect, read_response, request_head
from tests.support.waiting import eventually_sync

TOKEN = "sy_http_connections"
AUTH = f"Authorization: Bearer {TOKEN}"
MAX_CONNECTIONS = 4


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = environment(
        API_TOKENS=TOKEN,
        HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        HTTP_HEADER_TIMEOUT_SECONDS="30",
        HTTP_KEEPALIVE_TIMEOUT_SECONDS="30",
    )
    with switchyard_run(["--roles", "api"], env, tmp_path) as process:
        process.wait_ready()
        yield process


def hold(stack: ExitStack, port: int) -> socket.socket:
    """A connection that has sent half a request head and waits (not idle: never evicted)."""
    sock = stack.enter_context(connect(port))
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: switchyard.test\r\n")
    return sock


def ask(port: int, path: str) -> int:
    with connect(port) as sock:
        sock.sendall(request_head("GET", path, AUTH, "Connection: close"))
        return read_response(sock).status


def test_past_the_cap_health_is_served_other_requests_get_503_and_then_refused_at_once(
    server: ServerProcess,
) -> None:
    with ExitStack() as stack:
        for _ in range(MAX_CONNECTIONS):
            hold(stack, server.port)
        assert ask(server.port, "/health") == 200
        assert ask(server.port, "/ready") == 200
        assert ask(server.port, "/api/v1/workflows") == 503
        for _ in range(PROBE_CONNECTIONS):
            hold(stack, server.port)
        with connect(server.port) as refused:
            started = time.monotonic()
            response = read_response(refused)  # answered before sending anything
            assert time.monotonic() - started < 0.5
            assert (response.status, response.headers["retry-after"]) == (503, "1")
            assert closed_within(refused, 3.0)
    _wait_served_again(server)


def test_past_the_cap_the_longest_idle_keep_alive_connection_makes_room(
    server: ServerProcess,
) -> None:
    with ExitStack() as stack:
        idle = [stack.enter_context(connect(server.port)) for _ in range(MAX_CONNECTIONS)]
        for sock in idle:
            sock.sendall(request_head("GET", "/health"))
            assert read_response(sock).status == 200
        assert ask(server.port, "/api/v1/workflows") == 200  # served in full, not 503
        assert closed_within(idle[0], 2.0)  # the one idle the longest made room
        idle[1].sendall(request_head("GET", "/health"))
        assert read_response(idle[1]).status == 200  # the others are kept


def _wait_served_again(server: ServerProcess) -> None:
    """Once the held connections are gone, requests are served again."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    eventually_sync(
        lambda: httpx.get(f"{server.url}/api/v1/workflows", headers=headers).status_code,
        until=lambda status: status == 200,
        what="requests served again",
        within=5,
        every=0.05,
    )
