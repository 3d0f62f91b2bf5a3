"""The `sms` action: one text message through a Twilio-compatible HTTP API.

The `api_key` credential holds the API key, the account id and optionally the provider's base
URL (default `https://api.twilio.com`). The message is a form POST of `To`, `From` and `Body` to
`{base_url}/2010-04-01/Accounts/{account_id}/Messages.json` with basic auth (account id, API key)
and `Idempotency-Key: <the step's idempotency key>`, so a provider that honours the header sends
a retried step's message once. The call goes through the same address guard as
`http_request`. 429 and 5xx answers are retryable (after Retry-After when given), other 4xx
permanent. The output is the provider's `{"sid", "status"}`.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote, urlencode

import msgspec

from server.actions.base import ActionContext, Output
from server.actions.guarded_http import (
    OutboundClient,
    OutboundRequest,
    basic_authorization,
    status_failure,
)
from server.actions.inputs import typed_input
from server.queue.jobs import PermanentError

DEFAULT_BASE_URL: Final = "https://api.twilio.com"
RESPONSE_MAX_BYTES: Final = 262_144


class SmsConfig(msgspec.Struct, frozen=True, kw_only=True):
    credential: str
    sender: str = msgspec.field(name="from")
    to: str
    body: str


class SmsAccount(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of an `api_key` credential that an SMS provider needs."""

    api_key: str
    account_id: str
    base_url: str = DEFAULT_BASE_URL


class SmsAction:
    """The action with the guarded client it sends through."""

    def __init__(self, client: OutboundClient) -> None:
        self._client = client

    async def run(self, context: ActionContext) -> Output:
        config = typed_input(context.cfg, SmsConfig, "sms cfg")
        data = await context.load_credential(config.credential, "api_key")
        account = typed_input(data, SmsAccount, f"credential {config.credential!r}")
        url = (
            f"{account.base_url.rstrip('/')}/2010-04-01/Accounts/"
            f"{quote(account.account_id, safe='')}/Messages.json"
        )
        authorization = basic_authorization(account.account_id, account.api_key)
        context.register_secret(authorization)
        request = OutboundRequest(
            method="POST",
            url=url,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "Idempotency-Key": context.idempotency_key,
            },
            auth_headers={"Authorization": authorization},
            content=urlencode(
                {"To": config.to, "From": config.sender, "Body": config.body}
            ).encode(),
            timeout_seconds=context.timeout_seconds,
            max_response_bytes=RESPONSE_MAX_BYTES,
            follow_redirects=False,
        )
        response = await self._client.send(
            request, allowed_hosts=context.settings.http_allowed_hosts
        )
        failure = status_failure("the SMS provider", response)
        if failure is not None:
            raise failure
        return _receipt(response.body)


def _receipt(body: bytes) -> Output:
    try:
        answer: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("sid"), str):
        raise PermanentError("the SMS provider accepted the message but answered without a sid")
    return {"sid": answer["sid"], "status": str(answer.get("status", ""))}
