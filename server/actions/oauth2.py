"""OAuth2 client-credentials tokens for `http_request`, fetched through the guard and cached.

A token is kept per credential content (token URL, client id, secret, scopes), so a rotated
secret gets a fresh token, until shortly before it expires; concurrent requests for one
credential wait for one fetch instead of each fetching. The cache belongs to a
`ClientCredentialsTokens` instance (one per action instance, so per worker process) and its
clock is injectable, so expiry is tested without sleeping. Tokens live in memory only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import quote_plus, urlencode

import msgspec

from server.actions.guarded_http import (
    OutboundClient,
    OutboundRequest,
    basic_authorization,
    status_failure,
)
from server.queue.jobs import PermanentError

# Refresh this long before the server's expiry, so a token never expires in flight.
EXPIRY_MARGIN_SECONDS: Final = 30.0
# Lifetime assumed when the token answer has no `expires_in`.
DEFAULT_LIFETIME_SECONDS: Final = 300.0
TOKEN_RESPONSE_MAX_BYTES: Final = 65_536


class ClientCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """An `oauth2_client_credentials` credential's fields."""

    token_url: str
    client_id: str
    client_secret: str
    scopes: list[str] = msgspec.field(default_factory=list)

    @property
    def cache_key(self) -> str:
        text = json.dumps([self.token_url, self.client_id, self.client_secret, self.scopes])
        return hashlib.sha256(text.encode()).hexdigest()


class _Token(msgspec.Struct, frozen=True, kw_only=True):
    value: str
    refresh_at: float  # on the cache's clock


class ClientCredentialsTokens:
    """Access tokens per credential, fetched on first use and again once they near expiry."""

    def __init__(self, client: OutboundClient, *, clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def access_token(
        self,
        credentials: ClientCredentials,
        *,
        allowed_hosts: Sequence[str],
        timeout_seconds: float,
    ) -> str:
        """A valid access token for `credentials`, from the cache or the token endpoint."""
        key = credentials.cache_key
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if cached is not None and self._clock() < cached.refresh_at:
                return cached.value
            token = await self._fetch(credentials, allowed_hosts, timeout_seconds)
            self._tokens[key] = token
            return token.value

    def forget(self, credentials: ClientCredentials) -> None:
        """Drop a token the API refused, so the next request fetches a new one."""
        self._tokens.pop(credentials.cache_key, None)

    async def _fetch(
        self, credentials: ClientCredentials, allowed_hosts: Sequence[str], timeout_seconds: float
    ) -> _Token:
        form = {"grant_type": "client_credentials"}
        if credentials.scopes:
            form["scope"] = " ".join(credentials.scopes)
        # RFC 6749 2.3.1 (client_secret_basic): id and secret are form-encoded, then basic auth.
        authorization = basic_authorization(
            quote_plus(credentials.client_id), quote_plus(credentials.client_secret)
        )
        request = OutboundRequest(
            method="POST",
            url=credentials.token_url,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            auth_headers={"Authorization": authorization},
            content=urlencode(form).encode(),
            timeout_seconds=timeout_seconds,
            max_response_bytes=TOKEN_RESPONSE_MAX_BYTES,
            follow_redirects=False,
            repeatable=True,  # asking for a token again changes nothing
        )
        started = self._clock()
        response = await self._client.send(request, allowed_hosts=allowed_hosts)
        failure = status_failure("the OAuth2 token endpoint", response)
        if failure is not None:
            raise failure
        return _parse_token(response.body, started)


def _parse_token(body: bytes, started: float) -> _Token:
    try:
        answer: Any = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
        raise PermanentError("the OAuth2 token endpoint answered without an access_token")
    lifetime = answer.get("expires_in", DEFAULT_LIFETIME_SECONDS)
    if not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_LIFETIME_SECONDS
    margin = min(EXPIRY_MARGIN_SECONDS, lifetime / 2)
    return _Token(value=answer["access_token"], refresh_at=started + lifetime - margin)
