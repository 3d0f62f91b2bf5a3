"""A raw-socket HTTP peer on loopback whose answers break off: `broken_answer_peer`.

It accepts each request with `201 Created` and then breaks the answer: the effect happened, the
caller cannot read the result. What the action tests use to check that an accepted request is
not sent again.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest


class BrokenAnswerPeer:
    """A raw-socket HTTP server on loopback that accepts each request (`201 Created`) and then
    breaks the answer: it promises a 100-byte body, sends 8 bytes, and either hangs up
    (`hang=False`) or stalls until the test ends. `requests` counts the requests it read."""

    def __init__(self) -> None:
        self.requests = 0
        self.hang = False
        self.release = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, name="broken-peer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed: the session is over
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(10)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                body += connection.recv(65536)
            self.requests += 1
            connection.sendall(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n" + b'{"sid": '
            )
            if self.hang:
                self.release.wait(timeout=10)

    def close(self) -> None:
        self.release.set()
        self._listener.close()


@pytest.fixture
def broken_answer_peer() -> Iterator[BrokenAnswerPeer]:
    """An HTTP server that accepts requests, then breaks off or stalls its answer."""
    peer = BrokenAnswerPeer()
    try:
        yield peer
    finally:
        peer.close()
