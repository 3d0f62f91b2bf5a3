"""The `email` action against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest

from server.actions.email import EmailAction
from server.queue.jobs import PermanentError, RetryableError
from tests.support.action_contexts import Credentials, action_context
from tests.support.peers import SMTP_PASSWORD, SMTP_USER, SmtpPeer, free_port

# The peers listen on loopback, which the outbound guard refuses unless HTTP_ALLOWED_HOSTS
# allows it: these tests allow it explicitly, as a deployment with a local relay would.
LOOPBACK_PEERS = ("127.0.0.1", "localhost")
MESSAGE = {"to": "ann@example.com", "subject": "S", "text": "x"}


def smtp_credential(peer: SmtpPeer | None = None, **fields: Any) -> Credentials:
    server = {"host": "127.0.0.1", "port": peer.port if peer else free_port(), "security": "none"}
    return {"mail": ("smtp", {**server, **fields})}


async def send(
    cfg: dict[str, Any],
    credentials: Credentials,
    *,
    tls: ssl.SSLContext | None = None,
    allowed_hosts: tuple[str, ...] = LOOPBACK_PEERS,
    **options: Any,
) -> dict[str, Any]:
    context = action_context(
        {"credential": "mail", **cfg},
        credentials=credentials,
        allowed_hosts=allowed_hosts,
        **options,
    )
    return await EmailAction(tls=tls).run(context)


def login(peer: SmtpPeer, password: str = SMTP_PASSWORD) -> Credentials:
    """STARTTLS to `localhost` (the name the peer's certificate holds), then a login."""
    return smtp_credential(
        peer, host="localhost", security="starttls", username=SMTP_USER, password=password
    )


async def test_a_plain_text_message_is_delivered_with_a_stable_message_id(
    smtp_server: SmtpPeer,
) -> None:
    cfg = {"to": "ann@example.com", "subject": "Welcome", "text": "Hello Ann"}
    output = await send(cfg, smtp_credential(smtp_server), idempotency_key="run-1:step-1")
    [mail] = smtp_server.mailbox.mails
    assert mail.mail_from == "switchyard@localhost"
    assert mail.recipients == ["ann@example.com"]
    assert mail.message["Subject"] == "Welcome"
    assert mail.message.get_content_type() == "text/plain"
    assert mail.message.get_content().strip() == "Hello Ann"
    assert mail.message["Message-ID"] == output["message_id"]
    assert output["accepted"] == ["ann@example.com"]
    again = await send(cfg, smtp_credential(smtp_server), idempotency_key="run-1:step-1")
    other = await send(cfg, smtp_credential(smtp_server), idempotency_key="run-2:step-1")
    assert again["message_id"] == output["message_id"] != other["message_id"]


async def test_text_and_html_go_as_alternatives_to_every_recipient(smtp_server: SmtpPeer) -> None:
    output = await send(
        {
            "from": "Sales <sales@example.com>",
            "to": "Ann <ann@example.com>, bob@example.com",
            "cc": ["carol@example.com"],
            "subject": "Offer",
            "text": "Our offer",
            "html": "<p>Our <b>offer</b></p>",
        },
        smtp_credential(smtp_server),
    )
    [mail] = smtp_server.mailbox.mails
    assert mail.mail_from == "sales@example.com"
    assert sorted(mail.recipients) == ["ann@example.com", "bob@example.com", "carol@example.com"]
    assert mail.message["Cc"] == "carol@example.com"
    assert mail.message.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in mail.message.iter_parts()}
    assert parts["text/plain"].strip() == "Our offer"
    assert parts["text/html"].strip() == "<p>Our <b>offer</b></p>"
    assert output["message_id"].endswith("@example.com>")
    assert output["accepted"] == ["ann@example.com", "bob@example.com", "carol@example.com"]


async def test_an_html_only_message_is_html(smtp_server: SmtpPeer) -> None:
    await send(
        {"to": ["ann@example.com"], "subject": "S", "html": "<p>x</p>"},
        smtp_credential(smtp_server),
    )
    assert smtp_server.mailbox.mails[0].message.get_content_type() == "text/html"


async def test_starttls_and_a_login_are_used_and_the_user_is_the_default_sender(
    smtp_auth_server: SmtpPeer, tls_client_context: ssl.SSLContext
) -> None:
    message = {"to": "ann@example.com", "subject": "S", "text": "x"}
    await send(message, login(smtp_auth_server), tls=tls_client_context)
    [mail] = smtp_auth_server.mailbox.mails
    assert mail.mail_from == SMTP_USER


async def test_a_refused_login_is_permanent(
    smtp_auth_server: SmtpPeer, tls_client_context: ssl.SSLContext
) -> None:
    message = {"to": "ann@example.com", "subject": "S", "text": "x"}
    with pytest.raises(PermanentError, match="refused the login: 535"):
        await send(message, login(smtp_auth_server, "wrong"), tls=tls_client_context)
    assert smtp_auth_server.mailbox.mails == []


async def test_a_certificate_that_does_not_verify_is_permanent(smtp_auth_server: SmtpPeer) -> None:
    message = {"to": "ann@example.com", "subject": "S", "text": "x"}
    with pytest.raises(PermanentError, match="certificate of SMTP server localhost"):
        await send(message, login(smtp_auth_server))  # the system trust store: not our CA
    assert smtp_auth_server.mailbox.mails == []


async def test_a_server_requiring_starttls_refuses_plain_text_permanently(
    smtp_auth_server: SmtpPeer,
) -> None:
    message = {"to": "ann@example.com", "subject": "S", "text": "x"}
    with pytest.raises(PermanentError, match="530"):
        await send(message, smtp_credential(smtp_auth_server))


async def test_implicit_tls_delivers(
    smtps_server: SmtpPeer, tls_client_context: ssl.SSLContext
) -> None:
    credentials = smtp_credential(smtps_server, host="localhost", security="tls")
    await send(
        {"to": "ann@example.com", "subject": "S", "text": "x"}, credentials, tls=tls_client_context
    )
    assert len(smtps_server.mailbox.mails) == 1


async def test_a_busy_mailbox_is_retryable_and_an_unknown_one_permanent(
    smtp_server: SmtpPeer,
) -> None:
    credentials = smtp_credential(smtp_server)
    with pytest.raises(RetryableError, match="451"):
        await send({"to": "busy@example.com", "subject": "S", "text": "x"}, credentials)
    with pytest.raises(PermanentError, match="550"):
        await send({"to": "unknown@example.com", "subject": "S", "text": "x"}, credentials)
    output = await send(
        {"to": ["ann@example.com", "unknown@example.com"], "subject": "S", "text": "x"}, credentials
    )
    assert (output["accepted"], output["refused"]) == (["ann@example.com"], ["unknown@example.com"])


async def test_an_unreachable_server_is_retryable() -> None:
    with pytest.raises(RetryableError, match="could not be reached"):
        await send(MESSAGE, smtp_credential())


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "LocalHost.", "[::1]", "127.0.0.2", "::ffff:127.0.0.1"]
)
async def test_loopback_smtp_hosts_are_refused_unless_allowed(
    smtp_server: SmtpPeer, host: str
) -> None:
    # Only loopback here: were the guard broken, this test must not reach another network.
    # Private and metadata addresses are judged by the same `check_host` (test_outbound.py).
    with pytest.raises(PermanentError, match=r"it is a loopback address.*HTTP_ALLOWED_HOSTS"):
        await send(MESSAGE, smtp_credential(smtp_server, host=host), allowed_hosts=())
    assert smtp_server.mailbox.mails == []


async def test_an_allowed_network_lets_mail_through_to_the_checked_address(
    smtp_server: SmtpPeer,
) -> None:
    await send(MESSAGE, smtp_credential(smtp_server), allowed_hosts=("127.0.0.0/8",))
    assert len(smtp_server.mailbox.mails) == 1


async def test_refused_timed_out_and_unknown_servers_read_the_same() -> None:
    """A closed port, a port that never answers and a name that does not resolve give one
    message, so an email step cannot tell them apart and map a network."""
    with socket.socket() as silent:  # accepts connections (backlog) but never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with pytest.raises(RetryableError) as timed_out:
            await send(MESSAGE, smtp_credential(port=port), timeout_seconds=0.3)
    with pytest.raises(RetryableError) as refused:  # the same port, now closed
        await send(MESSAGE, smtp_credential(port=port))
    with pytest.raises(RetryableError) as unknown:
        await send(
            MESSAGE,
            smtp_credential(host="no-such-host.invalid", port=port),
            allowed_hosts=(),
        )
    expected = f"SMTP server 127.0.0.1:{port} could not be reached or stopped answering"
    assert str(timed_out.value) == str(refused.value) == expected
    assert str(unknown.value) == expected.replace("127.0.0.1", "no-such-host.invalid")


async def test_starttls_on_a_server_without_it_is_permanent(smtp_server: SmtpPeer) -> None:
    credentials = smtp_credential(smtp_server, security="starttls")
    with pytest.raises(PermanentError, match="does not support"):
        await send({"to": "ann@example.com", "subject": "S", "text": "x"}, credentials)
    assert smtp_server.mailbox.mails == []


async def test_invalid_cfg_is_permanent(smtp_server: SmtpPeer) -> None:
    with pytest.raises(PermanentError, match="`subject`"):
        await send({"to": "ann@example.com"}, smtp_credential(smtp_server))
    with pytest.raises(PermanentError, match="no address"):
        await send({"to": "", "subject": "S"}, smtp_credential(smtp_server))
    with pytest.raises(PermanentError, match="cannot make a message"):
        await send(
            {"to": "ann@example.com", "subject": "Hi\nBcc: eve@example.com", "text": "x"},
            smtp_credential(smtp_server),
        )
    assert smtp_server.mailbox.mails == []
