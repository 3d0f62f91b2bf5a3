"""The `email` action: one message through the SMTP server of an `smtp` credential.

The credential gives host, port, security (`none`, `starttls`, or `tls` from the first byte) and
an optional login; certificates are verified against the system's trust store. The message has
a plain-text part, an HTML part, or both as `multipart/alternative`, To and Cc lists (a string
may hold several comma-separated addresses) and a From that defaults to the credential's user
name when it is an address, else `switchyard@localhost`. Its `Message-ID` is derived from the
step's idempotency key, so a message sent again by a retried step is recognisable as the same.

The server's host goes through the same outbound guard as `http_request`
(`server.actions.outbound`): resolved once, every address checked (loopback, private and
link-local ones refused unless `HTTP_ALLOWED_HOSTS` allows them), and the connection made to a
checked address while STARTTLS or TLS still verify the certificate for the credential's host
name. Every way of not reaching the server (DNS failure, refused, timed out, no route, hung up)
gives the same retryable message, so error messages cannot tell a closed port from a filtered one.

The stdlib `smtplib` runs in a worker thread with the step's timeout on every socket operation.
4xx replies are retryable; 5xx replies, refused logins and certificates that do not verify are
permanent. Once the server has accepted the message (its answer to DATA), nothing can fail the
attempt any more: a QUIT that goes wrong is ignored, so a delivered message is never sent again
by a retry of this attempt. The output is `{"message_id", "accepted", "refused"}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import socket
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from typing import Literal

import msgspec
import structlog

from server.actions.base import ActionContext, Output
from server.actions.inputs import typed_input
from server.actions.outbound import (
    HostNotFoundError,
    ResolutionFailedError,
    Target,
    check_host,
)
from server.errors import AppError
from server.queue.jobs import PermanentError, RetryableError

log = structlog.get_logger(__name__)

DEFAULT_SENDER = "switchyard@localhost"


class EmailConfig(msgspec.Struct, frozen=True, kw_only=True):
    credential: str
    sender: str | None = msgspec.field(name="from", default=None)
    to: str | list[str]
    cc: list[str] = msgspec.field(default_factory=list)
    subject: str
    text: str | None = None
    html: str | None = None


class SmtpServer(msgspec.Struct, frozen=True, kw_only=True):
    """An `smtp` credential's fields."""

    host: str
    port: int
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: str | None = None


class EmailAction:
    """The action with the TLS context it verifies servers with (tests pass one trusting their
    certificate; by default the system's trust store, loaded on first use)."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls

    async def run(self, context: ActionContext) -> Output:
        config = typed_input(context.cfg, EmailConfig, "email cfg")
        data = await context.load_credential(config.credential, "smtp")
        server = typed_input(data, SmtpServer, f"credential {config.credential!r}")
        try:
            message = build_message(config, server, context.idempotency_key)
        except ValueError as error:  # e.g. a line break in a header: never sent as given
            raise PermanentError(f"email cfg cannot make a message: {error}") from None
        recipients = _addresses(config.to) + _addresses(config.cc)
        if not recipients:
            raise PermanentError("email cfg: `to` holds no address")
        target = await _checked_target(server, context.settings.http_allowed_hosts)
        if self._tls is None:
            self._tls = ssl.create_default_context()
        refused = await asyncio.to_thread(
            _deliver, server, target, self._tls, message, recipients, context.timeout_seconds
        )
        return {
            "message_id": str(message["Message-ID"]),  # a header object: as its text
            "accepted": [address for address in recipients if address not in refused],
            "refused": sorted(refused),
        }


async def _checked_target(server: SmtpServer, allowed_hosts: Sequence[str]) -> Target:
    """The server's addresses through the outbound guard; a name that does not resolve reads
    like any other unreachable server."""
    try:
        return await check_host(server.host, server.port, allowed_hosts)
    except (HostNotFoundError, ResolutionFailedError):
        raise unreachable(server) from None


def build_message(config: EmailConfig, server: SmtpServer, idempotency_key: str) -> EmailMessage:
    """The message: text and/or HTML (multipart/alternative when both), stable Message-ID."""
    sender = config.sender or _default_sender(server)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(_addresses(config.to))
    if config.cc:
        message["Cc"] = ", ".join(_addresses(config.cc))
    message["Subject"] = config.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(idempotency_key, sender)
    if config.text is not None or config.html is None:
        message.set_content(config.text or "")
        if config.html is not None:
            message.add_alternative(config.html, subtype="html")
    else:
        message.set_content(config.html, subtype="html")
    return message


def message_id(idempotency_key: str, sender: str) -> str:
    """`<digest@sender-domain>`: the same for every attempt of one step, unique across steps."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    _, address = getaddresses([sender])[0]
    domain = address.rpartition("@")[2] or "switchyard.localhost"
    return f"<{digest}@{domain}>"


def _default_sender(server: SmtpServer) -> str:
    if server.username and "@" in server.username:
        return server.username
    return DEFAULT_SENDER


def _addresses(value: str | list[str]) -> list[str]:
    fields = [value] if isinstance(value, str) else value
    return [address for _, address in getaddresses(fields) if address]


def _deliver(
    server: SmtpServer,
    target: Target,
    tls: ssl.SSLContext,
    message: EmailMessage,
    recipients: list[str],
    timeout_seconds: float,
) -> set[str]:
    """Send from this (worker) thread; the recipients the server refused."""
    smtp = _connect(server, target, tls, timeout_seconds)
    try:
        if server.security == "starttls":
            smtp.starttls(context=tls)
        if server.username:
            smtp.login(server.username, server.password or "")
        refused = smtp.send_message(message, to_addrs=recipients)
    except (smtplib.SMTPException, OSError) as error:
        _close(smtp)
        raise smtp_failure(server, error) from None
    _close(smtp)  # accepted: whatever QUIT answers, the message is sent and must not be again
    return set(refused)


def _connect(
    server: SmtpServer, target: Target, tls: ssl.SSLContext, timeout_seconds: float
) -> smtplib.SMTP:
    """A session with the first checked address that greets us; the TLS name stays the host."""
    for address in target.addresses:
        try:
            if server.security == "tls":
                return _PinnedSmtpSsl(
                    server.host, server.port, address=address, timeout=timeout_seconds, context=tls
                )
            return _PinnedSmtp(server.host, server.port, address=address, timeout=timeout_seconds)
        except ssl.SSLCertVerificationError as error:
            raise smtp_failure(server, error) from None
        except (smtplib.SMTPException, OSError) as error:
            log.info("smtp_connect_failed", error_type=type(error).__name__)
    raise unreachable(server)


class _PinnedSmtp(smtplib.SMTP):
    """SMTP to a checked address; STARTTLS still verifies the certificate for `host`."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        self._address = address
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout, self.source_address)


class _PinnedSmtpSsl(smtplib.SMTP_SSL):
    """SMTP over TLS from the first byte to a checked address, verified as `host`."""

    def __init__(
        self, host: str, port: int, *, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        self._address = address
        self._server_name = host
        super().__init__(host, port, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        plain = socket.create_connection((self._address, port), timeout, self.source_address)
        return self.context.wrap_socket(plain, server_hostname=self._server_name)


def _close(smtp: smtplib.SMTP) -> None:
    """QUIT and close, ignoring what goes wrong: nothing that follows may undo a delivery."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def unreachable(server: SmtpServer) -> RetryableError:
    """The one message for every way a server cannot be reached (DNS, refused, timed out, no
    route, hung up): they read the same, so an email step cannot map a network's ports."""
    return RetryableError(
        f"SMTP server {server.host}:{server.port} could not be reached or stopped answering"
    )


def smtp_failure(server: SmtpServer, error: Exception) -> AppError:
    """The action error for an SMTP failure: 4xx and connection trouble retry, the rest stop."""
    where = f"SMTP server {server.host}:{server.port}"
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return PermanentError(f"{where} refused the login: {_reply(error)}")
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        replies = {
            address: f"{code} {text.decode(errors='replace')}"
            for address, (code, text) in error.recipients.items()
        }
        message = f"{where} refused every recipient: {replies}"
        codes = [code for code, _ in error.recipients.values()]
        if all(400 <= code < 500 for code in codes):
            return RetryableError(message)
        return PermanentError(message)
    if isinstance(error, smtplib.SMTPResponseException) and not isinstance(
        error, smtplib.SMTPConnectError
    ):
        message = f"{where} answered {_reply(error)}"
        return RetryableError(message) if 400 <= error.smtp_code < 500 else PermanentError(message)
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return PermanentError(f"{where} does not support what the credential asks: {error}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return PermanentError(f"the TLS certificate of {where} does not verify: {error}")
    log.info("smtp_exchange_failed", error_type=type(error).__name__)
    return unreachable(server)


def _reply(error: smtplib.SMTPResponseException) -> str:
    text = error.smtp_error
    shown = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"{error.smtp_code} {shown}"
