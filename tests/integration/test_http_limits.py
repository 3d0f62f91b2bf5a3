"""HTTP limits of a running `switchyard run`, driven over raw sockets on loopback.

One server for the module, with deadlines shortened so the suite stays fast; sizes keep their
defaults (16 KB of head, 100 header fields) except MAX_PAYLOAD_BYTES (64 KB).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess, environment, switchyard_run
from tests.support.raw_http import (
    closed_within,
    connect,
    health_latency,
    read_response,
    request_head,
    send_until_answered,
    trickle,
)

TOKEN = "sy_http_limits"
AUTH = f"Authorization: Bearer {TOKEN}"
HEADER_TIMEOUT_SECONDS = 1.0
BODY_TIMEOUT_SECONDS = 1.0
KEEPALIVE_TIMEOUT_SECONDS = 0.5
MAX_PAYLOAD_BYTES = 65536
HEALTH_BUDGET_SECONDS = 0.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = environment(
        API_TOKENS=TOKEN,
        HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT_SECONDS),
        HTTP_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_SECONDS),
        HTTP_KEEPALIVE_TIMEOUT_SECONDS=str(KEEPALIVE_TIMEOUT_SECONDS),
        MAX_PAYLOAD_BYTES=str(MAX_PAYLOAD_BYTES),
    )
    data_dir: Path = tmp_path_factory.mktemp("http-limits")
    with switchyard_run(["--roles", "api"], env, data_dir) as process:
        process.wait_ready()
        yield process


def test_a_one_megabyte_header_is_answered_431_at_once_and_the_connection_closed(
    server: ServerProcess,
) -> None:
    with connect(server.port) as sock:
        started = time.monotonic()
        sock.sendall(request_head("GET", "/health", "X-Big: " + "a" * 1_048_576))
        response = read_response(sock)
        elapsed = time.monotonic() - started
        assert response.status == 431
        assert response.headers["connection"] == "close"
        assert closed_within(sock, 3.0)
    assert elapsed < 1.0  # refused after 16 KB: the megabyte is dropped, not parsed


def test_two_hundred_small_headers_are_answered_431(server: ServerProcess) -> None:
    headers = [f"X-Field-{n}: {n}" for n in range(200)]
    with connect(server.port) as sock:
        sock.sendall(request_head("GET", "/health", *headers))
        assert read_response(sock).status == 431
        assert closed_within(sock, 3.0)


def test_a_100_kb_request_line_is_answered_414(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(request_head("GET", "/health?q=" + "a" * 102_400))
        assert read_response(sock).status == 414
        assert closed_within(sock, 3.0)


def test_half_sent_headers_are_answered_408_at_the_deadline_while_health_answers(
    server: ServerProcess,
) -> None:
    with connect(server.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: switchyard.test\r\nX-Slow: a")
        assert health_latency(server.url) < HEALTH_BUDGET_SECONDS
        sock.sendall(b"bc")  # still trickling: the deadline counts from the first byte
        response = read_response(sock, timeout=HEADER_TIMEOUT_SECONDS + 3)
        elapsed = time.monotonic() - started
        assert response.status == 408
        assert closed_within(sock, 3.0)
    assert HEADER_TIMEOUT_SECONDS * 0.8 < elapsed < HEADER_TIMEOUT_SECONDS + 1.5


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    server: ServerProcess,
) -> None:
    with connect(server.port) as sock:
        started = time.monotonic()
        assert closed_within(sock, HEADER_TIMEOUT_SECONDS + 2)
    assert time.monotonic() - started > HEADER_TIMEOUT_SECONDS * 0.8


def test_a_slow_body_is_answered_408_and_the_connection_closed(server: ServerProcess) -> None:
    head = request_head(
        "POST", "/api/v1/workflows", AUTH, "Content-Type: application/json", "Content-Length: 64"
    )
    with connect(server.port) as sock:
        started = time.monotonic()
        sock.sendall(head)
        sent = trickle(sock, b" " * 64, interval=0.1)  # 6.4 s for the whole body
        response = read_response(sock, timeout=BODY_TIMEOUT_SECONDS + 3)
        elapsed = time.monotonic() - started
        assert response.status == 408
        assert closed_within(sock, 3.0)
    assert sent < 64
    assert elapsed < BODY_TIMEOUT_SECONDS + 1.5


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    server: ServerProcess,
) -> None:
    with connect(server.port) as sock:
        sock.sendall(request_head("GET", "/health"))
        assert read_response(sock).status == 200
        idle_since = time.monotonic()
        assert closed_within(sock, KEEPALIVE_TIMEOUT_SECONDS + 1.5)
    assert time.monotonic() - idle_since > KEEPALIVE_TIMEOUT_SECONDS * 0.8


def test_a_64_mb_header_sent_in_pieces_does_not_stall_health(server: ServerProcess) -> None:
    outcome: dict[str, object] = {}

    def send_header() -> None:
        with connect(server.port, timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: switchyard.test\r\nX-Big: ")
            outcome["pieces"] = send_until_answered(sock, 1024, b"a" * 65536)  # 64 MB
            outcome["status"] = read_response(sock).status

    sender = threading.Thread(target=send_header)
    sender.start()
    latencies: list[float] = []
    while sender.is_alive() or len(latencies) < 3:
        latencies.append(health_latency(server.url))
    sender.join()
    assert outcome["status"] == 431
    assert max(latencies) < HEALTH_BUDGET_SECONDS, latencies


def test_a_body_announced_larger_than_the_cap_is_answered_413_and_the_connection_closed(
    server: ServerProcess,
) -> None:
    head = request_head(
        "POST",
        "/api/v1/workflows",
        AUTH,
        "Content-Type: application/json",
        f"Content-Length: {64 * MAX_PAYLOAD_BYTES}",
    )
    with connect(server.port) as sock:
        sock.sendall(head)
        sent = send_until_answered(sock, 64, b" " * MAX_PAYLOAD_BYTES)
        assert read_response(sock).status == 413
        assert closed_within(sock, 3.0)
    assert sent < 64


def test_a_chunked_body_past_the_cap_is_answered_413_and_the_rest_not_read(
    server: ServerProcess,
) -> None:
    head = request_head(
        "POST",
        "/api/v1/workflows",
        AUTH,
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    )
    chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
    with connect(server.port) as sock:
        sock.sendall(head)
        sent = send_until_answered(sock, 4096, chunk)  # 64 MB
        response = read_response(sock)
        assert response.status == 413
        assert f"MAX_PAYLOAD_BYTES={MAX_PAYLOAD_BYTES}".encode() in response.body
        assert closed_within(sock, 3.0)
    assert sent < 4096


def test_a_body_nobody_reads_is_not_read_past_the_cap(server: ServerProcess) -> None:
    chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
    with connect(server.port) as sock:
        sock.sendall(request_head("GET", "/health", "Transfer-Encoding: chunked"))
        sent = send_until_answered(sock, 4096, chunk)
        assert read_response(sock).status == 200
        assert closed_within(sock, 3.0)
    assert sent < 4096


def test_normal_requests_keep_alive_and_pipelining_are_unaffected(server: ServerProcess) -> None:
    near_limit = [f"X-Field-{n}: {'v' * 100}" for n in range(98)]  # ~12 KB, 100 fields in all
    body = b'{"name": "' + b"n" * 60000 + b'"}'
    with connect(server.port) as sock:
        for _ in range(3):
            sock.sendall(request_head("GET", "/health", *near_limit))
            assert read_response(sock).status == 200
        sock.sendall(request_head("GET", "/health") + request_head("GET", "/ready"))
        assert [read_response(sock).status for _ in range(2)] == [200, 200]
        sock.sendall(
            request_head(
                "POST",
                "/api/v1/workflows",
                AUTH,
                "Content-Type: application/json",
                f"Content-Length: {len(body)}",
            )
            + body
        )
        assert read_response(sock).status in {201, 400}  # read, then judged by the app
        sock.sendall(request_head("GET", "/health"))
        assert read_response(sock).status == 200


def test_every_request_on_a_keep_alive_connection_gets_the_same_limits(
    server: ServerProcess,
) -> None:
    too_many = [f"X-Field-{n}: {n}" for n in range(200)]
    with connect(server.port) as sock:
        sock.sendall(request_head("GET", "/health"))
        assert read_response(sock).status == 200
        sock.sendall(request_head("GET", "/health", *too_many))
        assert read_response(sock).status == 431
        assert closed_within(sock, 3.0)
    with connect(server.port) as sock:
        sock.sendall(request_head("GET", "/health"))
        assert read_response(sock).status == 200
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: switchyard.test\r\n")
        response = read_response(sock, timeout=HEADER_TIMEOUT_SECONDS + 3)
        assert response.status == 408
        assert closed_within(sock, 3.0)
