"""Real network peers on loopback for the action tests: an SMTP server and HTTP(S) servers.

`smtp_server` (aiosmtpd, no login), `smtp_auth_server` (STARTTLS, then a login) and
`smtps_server` (TLS from the first byte) record every message they accept; a recipient named
`busy@...` is refused with 451 (try later) and `unknown@...` with 550;
`smtp_quit_refusing_server` answers QUIT with 451 after accepting the message. `http_peer`,
`other_http_peer` (another port: another origin) and `https_peer` record every request and
answer what the test programs per path (`reply`, or `respond` with a function); other paths
get 404. TLS peers present a certificate for the name `localhost` only, which
`tls_client_context` trusts.
Servers live for the session; the per-test fixtures clear what they recorded and programmed.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.certificates import TlsIdentity, localhost_identity

SMTP_USER = "mailer@example.com"
SMTP_PASSWORD = "correct horse"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- SMTP ---------------------------------------------------------------------------------------


class ReceivedMail(msgspec.Struct, frozen=True, kw_only=True):
    mail_from: str
    recipients: list[str]
    message: EmailMessage


class Mailbox:
    """An aiosmtpd handler that keeps what it accepted; some recipients are refused."""

    def __init__(self) -> None:
        self.mails: list[ReceivedMail] = []

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("busy@"):
            return "451 4.2.1 mailbox busy, try again later"
        if address.startswith("unknown@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(
            ReceivedMail(
                mail_from=envelope.mail_from, recipients=list(envelope.rcpt_tos), message=message
            )
        )
        return "250 Message accepted for delivery"


class QuitRefusingMailbox(Mailbox):
    """Accepts mail like `Mailbox`, then answers QUIT with a 4xx instead of 221: something
    going wrong after the message was accepted."""

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return "451 4.3.0 closing badly after accepting"


class SmtpPeer(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    mailbox: Mailbox


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    valid = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(),
        auth_data.password.decode(),
    ) == (SMTP_USER, SMTP_PASSWORD)
    return AuthResult(success=valid, handled=False)


def _serve_smtp(mailbox: Mailbox | None = None, **options: Any) -> Iterator[SmtpPeer]:
    mailbox = mailbox or Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield SmtpPeer(host=controller.hostname, port=controller.port, mailbox=mailbox)
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def _smtp_server() -> Iterator[SmtpPeer]:
    yield from _serve_smtp()


@pytest.fixture(scope="session")
def _smtp_auth_server(_tls_identity: TlsIdentity) -> Iterator[SmtpPeer]:
    yield from _serve_smtp(
        tls_context=_tls_identity.server,
        require_starttls=True,
        authenticator=_authenticate,
        auth_required=True,
    )


@pytest.fixture(scope="session")
def _smtps_server(_tls_identity: TlsIdentity) -> Iterator[SmtpPeer]:
    yield from _serve_smtp(ssl_context=_tls_identity.server)


@pytest.fixture(scope="session")
def _smtp_quit_refusing_server() -> Iterator[SmtpPeer]:
    yield from _serve_smtp(QuitRefusingMailbox())


@pytest.fixture
def smtp_quit_refusing_server(_smtp_quit_refusing_server: SmtpPeer) -> SmtpPeer:
    """An SMTP server on loopback that accepts mail, then answers QUIT with 451."""
    _smtp_quit_refusing_server.mailbox.mails.clear()
    return _smtp_quit_refusing_server


@pytest.fixture
def smtp_server(_smtp_server: SmtpPeer) -> SmtpPeer:
    """An SMTP server on loopback that accepts mail without login."""
    _smtp_server.mailbox.mails.clear()
    return _smtp_server


@pytest.fixture
def smtp_auth_server(_smtp_auth_server: SmtpPeer) -> SmtpPeer:
    """An SMTP server on loopback that requires STARTTLS (certificate for `localhost`, see
    `tls_client_context`), then a login (SMTP_USER, SMTP_PASSWORD)."""
    _smtp_auth_server.mailbox.mails.clear()
    return _smtp_auth_server


@pytest.fixture
def smtps_server(_smtps_server: SmtpPeer) -> SmtpPeer:
    """An SMTP server on loopback speaking TLS from the first byte, as `localhost`."""
    _smtps_server.mailbox.mails.clear()
    return _smtps_server


# -- HTTP ---------------------------------------------------------------------------------------


class RecordedRequest(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    def form(self) -> dict[str, str]:
        return {name: values[0] for name, values in parse_qs(self.body.decode()).items()}


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    status: int = 200
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: bytes = b""


Responder = Callable[[RecordedRequest], Reply]


class HttpPeer:
    """A programmable HTTP server: `reply`/`respond` per path; `requests` in arrival order."""

    def __init__(self, scheme: str, port: int) -> None:
        self.base_url = f"{scheme}://127.0.0.1:{port}"
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._responders: dict[str, Responder] = {}

    def reply(
        self,
        path: str,
        status: int = 200,
        *,
        json: Any = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        answer_headers = dict(headers or {})
        if json is not None:
            body = msgspec.json.encode(json)
            answer_headers.setdefault("Content-Type", "application/json")
        fixed = Reply(status=status, headers=answer_headers, body=body)
        self._responders[path] = lambda _request: fixed

    def respond(self, path: str, responder: Responder) -> None:
        self._responders[path] = responder

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == path]

    def reset(self) -> None:
        self.requests.clear()
        self._responders.clear()

    def answer(self, request: RecordedRequest) -> Reply:
        self.requests.append(request)
        responder = self._responders.get(request.path)
        return responder(request) if responder else Reply(status=404, body=b"no such path")


def _handler_for(peer: HttpPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = RecordedRequest(
                method=self.command,
                path=url.path,
                query=parse_qs(url.query),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            reply = peer.answer(request)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # refused TLS handshakes are what some tests are about: no tracebacks on stderr


def _serve_http(tls: ssl.SSLContext | None) -> Iterator[HttpPeer]:
    port = free_port()
    peer = HttpPeer("https" if tls else "http", port)
    server = _QuietServer(("127.0.0.1", port), _handler_for(peer))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="http-peer", daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def _tls_identity(tmp_path_factory: pytest.TempPathFactory) -> TlsIdentity:
    return localhost_identity(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="session")
def _http_peer() -> Iterator[HttpPeer]:
    yield from _serve_http(None)


@pytest.fixture(scope="session")
def _other_http_peer() -> Iterator[HttpPeer]:
    yield from _serve_http(None)


@pytest.fixture(scope="session")
def _https_peer(_tls_identity: TlsIdentity) -> Iterator[HttpPeer]:
    yield from _serve_http(_tls_identity.server)


@pytest.fixture
def http_peer(_http_peer: HttpPeer) -> HttpPeer:
    """A plain HTTP server on 127.0.0.1, cleared for this test."""
    _http_peer.reset()
    return _http_peer


@pytest.fixture
def other_http_peer(_other_http_peer: HttpPeer) -> HttpPeer:
    """A second plain HTTP server on 127.0.0.1, on another port: another origin."""
    _other_http_peer.reset()
    return _other_http_peer


@pytest.fixture
def https_peer(_https_peer: HttpPeer) -> HttpPeer:
    """An HTTPS server on 127.0.0.1 whose certificate names only `localhost`."""
    _https_peer.reset()
    return _https_peer


@pytest.fixture
def tls_client_context(_tls_identity: TlsIdentity) -> ssl.SSLContext:
    """A client TLS context that trusts the peers' `localhost` certificate and nothing else."""
    context: ssl.SSLContext = _tls_identity.client
    return context
