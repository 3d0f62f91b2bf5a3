"""The `http_request` action: one HTTP call to any public endpoint, its answer as the output.

The rendered cfg names the method, URL, headers, query, and a JSON or raw body; `auth` with
`credential` adds an API key (`Authorization: Bearer <key>`, or the raw key in the credential's
`header`), HTTP basic auth, or an OAuth2 client-credentials token (cached per credential until
shortly before it expires; dropped and fetched once more when the API answers 401). Every call,
the token fetch included, goes through the address guard (`server.actions.guarded_http`). The
request carries `Idempotency-Key: <the step's idempotency key>` unless the cfg sets one, so
an API that honours it applies a retried step once. 429 and 5xx answers are retryable (after
Retry-After when given), other 4xx permanent unless listed in `expected_status`. The output is
`{"status", "headers", "body"}`, the body parsed when the answer is JSON, else text.
"""

from __future__ import annotations

import email.message
from enum import StrEnum
from typing import Any, Literal

import httpx
import msgspec

from server import tracing
from server.actions.base import ActionContext, Output
from server.actions.guarded_http import (
    OutboundClient,
    OutboundRequest,
    OutboundResponse,
    basic_authorization,
    status_failure,
)
from server.actions.inputs import typed_input
from server.actions.oauth2 import ClientCredentials, ClientCredentialsTokens
from server.queue.jobs import PermanentError

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


class AuthKind(StrEnum):
    """How a credential authenticates the request; also the credential type it must have."""

    API_KEY = "api_key"
    BASIC = "basic_auth"
    OAUTH2 = "oauth2_client_credentials"


class HttpRequestConfig(msgspec.Struct, frozen=True, kw_only=True):
    method: Method = "GET"
    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    query: dict[str, str] = msgspec.field(default_factory=dict)
    json: Any = msgspec.UNSET
    body: str | None = None
    credential: str | None = None
    auth: AuthKind | None = None
    expected_status: list[int] = msgspec.field(default_factory=list)
    timeout_seconds: float | None = None
    max_response_bytes: int | None = None
    follow_redirects: bool = True


class HttpRequestAction:
    """The action with its collaborators: the guarded client and the OAuth2 token cache."""

    def __init__(self, client: OutboundClient, tokens: ClientCredentialsTokens) -> None:
        self._client = client
        self._tokens = tokens

    async def run(self, context: ActionContext) -> Output:
        config = _config(context.cfg)
        oauth2 = await _oauth2_credentials(context, config)
        response = await self._send(context, config, oauth2)
        if response.status == 401 and oauth2 is not None:
            self._tokens.forget(oauth2)  # revoked or rotated early: one fresh token, once
            response = await self._send(context, config, oauth2)
        failure = status_failure(_described(config), response, config.expected_status)
        if failure is not None:
            raise failure
        return {
            "status": response.status,
            "headers": response.headers,
            "body": _parsed_body(response),
        }

    async def _send(
        self, context: ActionContext, config: HttpRequestConfig, oauth2: ClientCredentials | None
    ) -> OutboundResponse:
        timeout = min(config.timeout_seconds or context.timeout_seconds, context.timeout_seconds)
        allowed = context.settings.http_allowed_hosts
        if oauth2 is not None:
            token = await self._tokens.access_token(
                oauth2, allowed_hosts=allowed, timeout_seconds=timeout
            )
            auth_headers = {"Authorization": f"Bearer {token}"}
        else:
            auth_headers = await _credential_headers(context, config)
        for value in auth_headers.values():
            context.register_secret(value)
        request = OutboundRequest(
            method=config.method,
            url=config.url,
            headers=_headers(context, config),
            auth_headers=auth_headers,
            params=config.query,
            content=_content(config),
            timeout_seconds=timeout,
            max_response_bytes=config.max_response_bytes or context.settings.max_payload_bytes,
            follow_redirects=config.follow_redirects,
        )
        if tracing.ENABLED:
            return await self._traced_send(request, config, allowed)
        return await self._client.send(request, allowed_hosts=allowed)

    async def _traced_send(
        self, request: OutboundRequest, config: HttpRequestConfig, allowed: tuple[str, ...]
    ) -> OutboundResponse:
        """The call inside a CLIENT span whose `traceparent` the request carries (unless the
        cfg sets its own). The span names the URL without its query or user info."""
        attributes = {"http.request.method": config.method, "url.full": _described(config)}
        headers = dict(request.headers)
        with tracing.client_span(config.method, headers, attributes) as span:
            if not any(name.lower() == "traceparent" for name in request.headers):
                request = msgspec.structs.replace(request, headers=headers)
            response = await self._client.send(request, allowed_hosts=allowed)
            span.set_attribute("http.response.status_code", response.status)
            return response


def _described(config: HttpRequestConfig) -> str:
    """Method and URL without query or user info, which may hold secrets, for error messages."""
    url = httpx.URL(config.url)
    return f"{config.method} {url.scheme}://{url.netloc.decode('ascii')}{url.path}"


def _config(cfg: dict[str, Any]) -> HttpRequestConfig:
    config = typed_input(cfg, HttpRequestConfig, "http_request cfg")
    if config.json is not msgspec.UNSET and config.body is not None:
        raise PermanentError("http_request cfg: give `json` or `body`, not both")
    if (config.credential is None) != (config.auth is None):
        raise PermanentError("http_request cfg: `credential` and `auth` go together")
    return config


async def _oauth2_credentials(
    context: ActionContext, config: HttpRequestConfig
) -> ClientCredentials | None:
    if config.auth is not AuthKind.OAUTH2 or config.credential is None:
        return None
    data = await context.load_credential(config.credential, AuthKind.OAUTH2)
    return typed_input(data, ClientCredentials, f"credential {config.credential!r}")


async def _credential_headers(context: ActionContext, config: HttpRequestConfig) -> dict[str, str]:
    if config.auth is None or config.credential is None:
        return {}
    data = await context.load_credential(config.credential, config.auth)
    if config.auth is AuthKind.BASIC:
        login = typed_input(data, _BasicAuth, f"credential {config.credential!r}")
        return {"Authorization": basic_authorization(login.username, login.password)}
    key = typed_input(data, _ApiKey, f"credential {config.credential!r}")
    if key.header.lower() == "authorization":
        return {"Authorization": f"Bearer {key.api_key}"}
    return {key.header: key.api_key}


class _BasicAuth(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    password: str


class _ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    api_key: str
    header: str = "Authorization"


def _headers(context: ActionContext, config: HttpRequestConfig) -> dict[str, str]:
    headers = dict(config.headers)
    present = {name.lower() for name in headers}
    if "idempotency-key" not in present:
        headers["Idempotency-Key"] = context.idempotency_key
    if "user-agent" not in present:
        headers["User-Agent"] = "Switchyard"
    if config.json is not msgspec.UNSET and "content-type" not in present:
        headers["Content-Type"] = "application/json"
    return headers


def _content(config: HttpRequestConfig) -> bytes | None:
    if config.json is not msgspec.UNSET:
        return msgspec.json.encode(config.json)
    return None if config.body is None else config.body.encode()


def _parsed_body(response: OutboundResponse) -> Any:
    """JSON answers parsed; anything else as text in the answer's charset (UTF-8 by default)."""
    header = email.message.Message()
    header["content-type"] = response.headers.get("content-type", "")
    if "json" in header.get_content_type():
        try:
            return msgspec.json.decode(response.body)
        except msgspec.DecodeError:
            pass  # mislabelled: hand it over as text
    charset = header.get_content_charset() or "utf-8"
    try:
        return response.body.decode(charset, "replace")
    except LookupError:
        return response.body.decode("utf-8", "replace")
