"""The `sms` action against a real HTTP server on loopback speaking Twilio's API."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from server.actions.guarded_http import OutboundClient
from server.actions.sms import SmsAction
from server.queue.jobs import PermanentError, RetryableError
from tests.support.action_contexts import Credentials, action_context
from tests.support.peers import HttpPeer

MESSAGES_PATH = "/2010-04-01/Accounts/AC123/Messages.json"
CFG = {"credential": "twilio", "from": "+15550001", "to": "+15550002", "body": "Hello Ann"}


def credentials(base_url: str) -> Credentials:
    return {
        "twilio": ("api_key", {"api_key": "key-1", "account_id": "AC123", "base_url": base_url})
    }


async def send(http_peer: HttpPeer, **options: Any) -> dict[str, Any]:
    context = action_context(CFG, credentials=credentials(http_peer.base_url), **options)
    return await SmsAction(OutboundClient()).run(context)


async def test_the_message_is_posted_with_basic_auth_and_an_idempotency_key(
    http_peer: HttpPeer,
) -> None:
    http_peer.reply(MESSAGES_PATH, status=201, json={"sid": "SM1", "status": "queued"})
    output = await send(http_peer, idempotency_key="run-1:step-1")
    assert output == {"sid": "SM1", "status": "queued"}
    [request] = http_peer.requests_to(MESSAGES_PATH)
    assert request.method == "POST"
    assert request.form() == {"To": "+15550002", "From": "+15550001", "Body": "Hello Ann"}
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:key-1").decode()
    assert request.headers["idempotency-key"] == "run-1:step-1"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"


async def test_rate_limiting_is_retryable_after_the_providers_delay(http_peer: HttpPeer) -> None:
    http_peer.reply(MESSAGES_PATH, status=429, headers={"Retry-After": "30"}, json={"code": 20429})
    with pytest.raises(RetryableError, match="HTTP 429") as raised:
        await send(http_peer)
    assert raised.value.delay == 30.0


async def test_a_server_error_is_retryable(http_peer: HttpPeer) -> None:
    http_peer.reply(MESSAGES_PATH, status=503)
    with pytest.raises(RetryableError, match="HTTP 503"):
        await send(http_peer)


async def test_a_rejected_message_is_permanent(http_peer: HttpPeer) -> None:
    http_peer.reply(MESSAGES_PATH, status=400, json={"message": "The 'To' number is not valid"})
    with pytest.raises(PermanentError, match=r"HTTP 400.*not valid"):
        await send(http_peer)


async def test_an_answer_without_a_sid_is_permanent(http_peer: HttpPeer) -> None:
    http_peer.reply(MESSAGES_PATH, status=201, body=b"<html>ok</html>")
    with pytest.raises(PermanentError, match="without a sid"):
        await send(http_peer)


async def test_the_provider_url_goes_through_the_address_guard(http_peer: HttpPeer) -> None:
    with pytest.raises(PermanentError, match="HTTP_ALLOWED_HOSTS"):
        await send(http_peer, allowed_hosts=())
    assert http_peer.requests == []


async def test_a_credential_without_an_account_id_is_permanent() -> None:
    context = action_context(CFG, credentials={"twilio": ("api_key", {"api_key": "k"})})
    with pytest.raises(PermanentError, match=r"credential 'twilio' is invalid.*account_id"):
        await SmsAction(OutboundClient()).run(context)
