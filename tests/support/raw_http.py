"""HTTP/1.1 over raw sockets: what a hostile or careless client sends, byte for byte.

A test writes exactly the bytes it means (half a head, a 1 MB header, a body trickled one byte
at a time) and reads what the server answers, and whether and when it closes the connection.
"""

from __future__ import annotations

import select
import socket
import time

import httpx

READ_SIZE = 65536


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: switchyard.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, timeout: float = 5.0) -> Response:
    """Read one response (Content-Length or chunked body) from `sock`."""
    sock.settimeout(timeout)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            raise ConnectionError(f"closed before a complete response head: {buffer[:200]!r}")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    if headers.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                break
            rest += chunk
        return Response(int(status_line.split()[1]), headers, _unchunk(rest))
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            break
        rest += chunk
    return Response(int(status_line.split()[1]), headers, rest[:length])


def _unchunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes (EOF or reset) within `seconds`; further input is dropped."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            return False
        try:
            if not sock.recv(READ_SIZE):
                return True
        except ConnectionError:
            return True
    return False


def trickle(sock: socket.socket, data: bytes, interval: float) -> int:
    """Send `data` one byte every `interval` seconds until the server answers or closes.

    Returns the number of bytes sent.
    """
    for sent in range(len(data)):
        readable, _, _ = select.select([sock], [], [], interval)
        if readable:
            return sent
        sock.sendall(data[sent : sent + 1])
    return len(data)


def send_until_answered(sock: socket.socket, pieces: int, piece: bytes) -> int:
    """Send `piece` up to `pieces` times, until the server answers or closes.

    Returns the number of pieces sent.
    """
    for sent in range(pieces):
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sent
        try:
            sock.sendall(piece)
        except ConnectionError:
            return sent
    return pieces


def health_latency(base_url: str) -> float:
    """Seconds /health takes to answer on a fresh connection (asserting that it answers 200)."""
    started = time.monotonic()
    response = httpx.get(f"{base_url}/health", timeout=5)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    return elapsed
