"""The `email` action: one message through the SMTP server of an `smtp` credential.

The credential gives host, port, security (`none`, `starttls`, or `tls` from the first byte) and
an optional login; certificates are verified against the system's trust store. The message has
a plain-text part, an HTML part, or both as `multipart/alternative`, To and Cc lists (a string
may hold several comma-separated addresses) and a From that defaults to the credential's user
name when it is an address, else `switchyard@localhost`. Its `Message-ID` is derived from the
step's idempotency key, so a message sent again by a retried step is recognisable as the same.

The stdlib `smtplib` runs in a worker thread with the step's timeout on every socket operation.
Connection failures and 4xx replies are retryable; 5xx replies, refused logins and certificates
that do not verify are permanent. The output is `{"message_id", "accepted", "refused"}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from typing import Literal

import msgspec

from server.actions.base import ActionContext, Output
from server.actions.inputs import typed_input
from server.errors import AppError
from server.queue.jobs import PermanentError, RetryableError

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
        if self._tls is None:
            self._tls = ssl.create_default_context()
        refused = await asyncio.to_thread(
            _deliver, server, self._tls, message, recipients, context.timeout_seconds
        )
        return {
            "message_id": message["Message-ID"],
            "accepted": [address for address in recipients if address not in refused],
            "refused": sorted(refused),
        }


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
    tls: ssl.SSLContext,
    message: EmailMessage,
    recipients: list[str],
    timeout_seconds: float,
) -> set[str]:
    """Send from this (worker) thread; the recipients the server refused."""
    try:
        with _connect(server, tls, timeout_seconds) as smtp:
            if server.security == "starttls":
                smtp.starttls(context=tls)
            if server.username:
                smtp.login(server.username, server.password or "")
            refused = smtp.send_message(message, to_addrs=recipients)
    except (smtplib.SMTPException, OSError) as error:
        raise smtp_failure(server, error) from None
    return set(refused)


def _connect(server: SmtpServer, tls: ssl.SSLContext, timeout_seconds: float) -> smtplib.SMTP:
    if server.security == "tls":
        return smtplib.SMTP_SSL(server.host, server.port, timeout=timeout_seconds, context=tls)
    return smtplib.SMTP(server.host, server.port, timeout=timeout_seconds)


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
    return RetryableError(f"{where} could not be reached: {error!r}")


def _reply(error: smtplib.SMTPResponseException) -> str:
    text = error.smtp_error
    shown = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"{error.smtp_code} {shown}"
