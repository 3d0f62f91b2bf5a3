"""One outbound HTTP exchange through the address guard, as actions need it.

`OutboundClient.send` checks the URL's host (`server.actions.outbound`), connects to a checked
address while the Host header, TLS SNI and certificate verification keep the URL's host name,
follows redirects itself (at most `max_redirects`, each hop checked again; when the origin
changes, the credentials and every caller-supplied header but those in CROSS_ORIGIN_HEADERS
are dropped), streams the body and stops at `max_response_bytes`, and bounds the whole
exchange, DNS and redirects included, by `timeout_seconds`. Connections are never kept alive: a
pooled connection is keyed by address, so reusing one for another host name would skip that
name's certificate check. Transport failures become `RetryableError`, except once a POST or
PATCH was accepted (2xx): an answer that then cannot be read, or does not arrive in time, is a
`PermanentError`, since a retry would apply the request again. A certificate that does not
verify, a refused address, an oversized answer or a redirect loop become `PermanentError`.
`status_failure` maps an answer's status to the action error it calls for.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import ssl
from collections.abc import Collection, Sequence
from typing import Final

import certifi
import httpx
import msgspec

from server.actions.outbound import Target, check_url, pinned_url
from server.errors import AppError
from server.queue.jobs import PermanentError, RetryableError

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
# Headers that describe a body: dropped with the body when a redirect turns a request into GET.
BODY_HEADERS: Final = frozenset({"content-type", "content-length", "content-encoding"})
# The caller's headers that a redirect may carry to another origin; every other one (an
# `X-Api-Token` rendered from a secret, a cookie, a tenant id) stays with the request's own
# origin. Content-Type and Content-Encoding describe the body and are left only while the body
# is (`_redirected` drops them with it). Idempotency-Key travels with a kept body: a 307/308
# sends the same effect to the new origin, which needs the key to apply a retry once.
CROSS_ORIGIN_HEADERS: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "user-agent",
        "content-type",
        "content-encoding",
        "idempotency-key",
    }
)
ERROR_SNIPPET_CHARS: Final = 200
# Methods a repeat cannot apply twice (RFC 9110 9.2.2): their answers may be fetched again.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class OutboundRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What to send. `auth_headers` go to the first origin only, never across a redirect."""

    method: str
    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    auth_headers: dict[str, str] = msgspec.field(default_factory=dict)
    params: dict[str, str] = msgspec.field(default_factory=dict)
    content: bytes | None = None
    timeout_seconds: float
    max_response_bytes: int
    follow_redirects: bool = True
    max_redirects: int = 5
    repeatable: bool = False  # a POST with no effect (a token request): accepted may retry


class OutboundResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    url: str


class _Progress(msgspec.Struct, kw_only=True):
    """How far one exchange got: set once a non-idempotent request was accepted (2xx), after
    which a failure to read the answer must not send the request again."""

    accepted: str | None = None


class _Hop(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    url: httpx.URL
    headers: dict[str, str]
    content: bytes | None
    repeatable: bool = False


class OutboundClient:
    """Sends guarded requests; owns the TLS context (tests may pass one trusting their CA)."""

    def __init__(self, *, verify: ssl.SSLContext | None = None) -> None:
        self._verify = verify

    def _tls_context(self) -> ssl.SSLContext:
        if self._verify is None:  # built on first use: loading the CA bundle takes a while
            self._verify = ssl.create_default_context(cafile=certifi.where())
        return self._verify

    async def send(
        self, request: OutboundRequest, *, allowed_hosts: Sequence[str]
    ) -> OutboundResponse:
        """Send `request`, following redirects; the final answer, whatever its status."""
        client = httpx.AsyncClient(
            verify=self._tls_context(),
            trust_env=False,  # a proxy from the environment would bypass the guard
            follow_redirects=False,
            timeout=request.timeout_seconds,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        progress = _Progress()
        try:
            async with asyncio.timeout(request.timeout_seconds), client:
                return await _follow(client, request, allowed_hosts, progress)
        except TimeoutError:
            if progress.accepted is not None:
                raise PermanentError(
                    f"{progress.accepted}, but its answer did not arrive within "
                    f"{request.timeout_seconds:g} s; the request is not sent again"
                ) from None
            raise RetryableError(
                f"{request.method} {_origin(httpx.URL(request.url))} took longer than "
                f"{request.timeout_seconds:g} s"
            ) from None


async def _follow(
    client: httpx.AsyncClient,
    request: OutboundRequest,
    allowed_hosts: Sequence[str],
    progress: _Progress,
) -> OutboundResponse:
    first = _parsed_url(request.url).copy_merge_params(request.params)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    hop = _Hop(
        method=request.method,
        url=first,
        headers=headers,
        content=request.content,
        repeatable=request.repeatable,
    )
    for _ in range(request.max_redirects + 1):
        if _origin(hop.url) == _origin(first):
            sent = {**hop.headers, **request.auth_headers}
        else:  # another origin sees none of the caller's headers but a short safe list
            sent = {k: v for k, v in hop.headers.items() if k.lower() in CROSS_ORIGIN_HEADERS}
        target = await check_url(hop.url, allowed_hosts)
        sent_hop = msgspec.structs.replace(hop, headers=sent)
        response = await _exchange(client, target, sent_hop, request.max_response_bytes, progress)
        location = response.headers.get("location")
        if not (request.follow_redirects and response.status in REDIRECT_STATUSES and location):
            return response
        hop = _redirected(hop, response.status, _parsed_url(location, base=hop.url))
    raise PermanentError(
        f"{request.method} {_origin(first)} redirected more than {request.max_redirects} times"
    )


def _parsed_url(text: str, *, base: httpx.URL | None = None) -> httpx.URL:
    try:
        return base.join(text) if base is not None else httpx.URL(text)
    except httpx.InvalidURL as error:
        raise PermanentError(f"{text!r} is not a valid URL: {error}") from None


def _redirected(hop: _Hop, status: int, url: httpx.URL) -> _Hop:
    """The next hop: 303, and 301/302 after a POST, turn into a GET without body (RFC 9110)."""
    if (status == 303 and hop.method != "HEAD") or (status in (301, 302) and hop.method == "POST"):
        headers = {k: v for k, v in hop.headers.items() if k.lower() not in BODY_HEADERS}
        return _Hop(method="GET", url=url, headers=headers, content=None)
    return msgspec.structs.replace(hop, url=url)


async def _exchange(
    client: httpx.AsyncClient, target: Target, hop: _Hop, max_bytes: int, progress: _Progress
) -> OutboundResponse:
    """Try the checked addresses in resolver order until one accepts the connection."""
    failure: httpx.ConnectError | None = None
    for address in target.addresses:
        try:
            return await _exchange_with(client, address, target, hop, max_bytes, progress)
        except httpx.ConnectError as error:
            if _certificate_failure(error):
                raise PermanentError(
                    f"the TLS certificate of {target.host} does not verify: {error}"
                ) from None
            failure = error
    raise RetryableError(f"could not connect to {target.host} port {target.port}: {failure}")


async def _exchange_with(
    client: httpx.AsyncClient,
    address: str,
    target: Target,
    hop: _Hop,
    max_bytes: int,
    progress: _Progress,
) -> OutboundResponse:
    extensions = {"sni_hostname": target.host} if hop.url.scheme == "https" else {}
    try:
        request = client.build_request(
            hop.method,
            pinned_url(hop.url, address),
            headers={**hop.headers, "Host": hop.url.netloc.decode("ascii")},
            content=hop.content,
            extensions=extensions,
        )
        response = await client.send(request, stream=True)
    except httpx.ConnectError:
        raise
    except (UnicodeEncodeError, httpx.LocalProtocolError) as error:  # the request is malformed
        raise PermanentError(f"the request cannot be sent as given: {error}") from None
    except httpx.TransportError as error:
        raise RetryableError(f"{hop.method} {_origin(hop.url)} failed: {error!r}") from None
    status = response.status_code
    if 200 <= status < 300 and not (hop.repeatable or hop.method in IDEMPOTENT_METHODS):
        progress.accepted = f"{hop.method} {_origin(hop.url)} was accepted (HTTP {status})"
    try:
        body = await _read_capped(response, max_bytes, hop)
    except httpx.TransportError as error:
        if progress.accepted is not None:  # the effect happened: a retry would repeat it
            raise PermanentError(
                f"{progress.accepted}, but reading its answer failed: {error!r}; "
                "the request is not sent again"
            ) from None
        raise RetryableError(
            f"reading the answer of {_origin(hop.url)} failed: {error!r}"
        ) from None
    finally:
        await response.aclose()
    headers = {name: ", ".join(response.headers.get_list(name)) for name in response.headers}
    return OutboundResponse(
        status=response.status_code, headers=headers, body=body, url=str(hop.url)
    )


async def _read_capped(response: httpx.Response, max_bytes: int, hop: _Hop) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise PermanentError(
                f"the answer of {_origin(hop.url)} is larger than {max_bytes} bytes; "
                "raise max_response_bytes if it is expected"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _certificate_failure(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def basic_authorization(username: str, password: str) -> str:
    """An `Authorization` header value for HTTP basic authentication (RFC 7617, UTF-8)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def status_failure(
    what: str, response: OutboundResponse, expected: Collection[int] = ()
) -> AppError | None:
    """The error an answer's status calls for: None for success (< 400 or `expected`),
    `RetryableError` for 429 and 5xx (honouring Retry-After), else `PermanentError`."""
    status = response.status
    if status < 400 or status in expected:
        return None
    snippet = response.body[:ERROR_SNIPPET_CHARS].decode("utf-8", "replace").strip()
    message = f"{what} answered HTTP {status}" + (f": {snippet}" if snippet else "")
    if status == 429 or status >= 500:
        delay = retry_after_seconds(response.headers.get("retry-after"), dt.datetime.now(dt.UTC))
        return RetryableError(message, delay=delay)
    return PermanentError(message)


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from `now`; None if absent."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())
