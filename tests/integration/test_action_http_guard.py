"""`http_request` through the guard: refused addresses, redirects, TLS names, failure kinds."""

from __future__ import annotations

import ssl
import threading
from typing import Any

import pytest

from server.actions.guarded_http import OutboundClient
from server.actions.http_request import HttpRequestAction
from server.actions.oauth2 import ClientCredentialsTokens
from server.queue.jobs import PermanentError, RetryableError
from tests.support.action_contexts import action_context
from tests.support.broken_peers import BrokenAnswerPeer
from tests.support.peers import HttpPeer, RecordedRequest, Reply, free_port


async def call(
    cfg: dict[str, Any], *, verify: ssl.SSLContext | None = None, **options: Any
) -> dict[str, Any]:
    client = OutboundClient(verify=verify)
    action = HttpRequestAction(client, ClientCredentialsTokens(client))
    return await action.run(action_context(cfg, **options))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/", "a loopback address"),
        ("http://10.0.0.1/", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://[::1]:{port}/", "a loopback address"),
        ("http://localhost:{port}/", "a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/", "a loopback address"),
        ("http://0.0.0.0:{port}/", "an unspecified address"),
        ("http://100.64.0.1/", "a non-public address"),
        ("http://[fd00::1]/", "a private address"),
        ("http://224.0.0.1/", "a multicast address"),
    ],
)
async def test_private_addresses_are_refused_before_connecting(
    http_peer: HttpPeer, url: str, reason: str
) -> None:
    http_peer.reply("/", body=b"should not be reached")
    with pytest.raises(PermanentError, match=f"it is {reason}.*HTTP_ALLOWED_HOSTS"):
        await call({"url": url.format(port=http_peer.port)}, allowed_hosts=())
    assert http_peer.requests == []


@pytest.mark.parametrize("allowed", ["localhost", "127.0.0.1", "127.0.0.0/8", "LOCALHOST."])
async def test_an_allowed_host_or_network_may_be_called(http_peer: HttpPeer, allowed: str) -> None:
    http_peer.reply("/ok", json={"ok": True})
    # localhost may resolve to ::1 first, where nothing listens: the next checked address is used.
    host = "localhost" if "localhost" in allowed.lower() else "127.0.0.1"
    output = await call({"url": f"http://{host}:{http_peer.port}/ok"}, allowed_hosts=(allowed,))
    assert output["body"] == {"ok": True}


async def test_only_http_and_https_urls_are_called() -> None:
    with pytest.raises(PermanentError, match="only http and https"):
        await call({"url": "ftp://127.0.0.1/file"})


async def test_redirects_are_followed_and_credentials_stay_with_their_origin(
    http_peer: HttpPeer,
) -> None:
    elsewhere = f"http://localhost:{http_peer.port}/landing"
    http_peer.reply("/start", status=307, headers={"Location": "/moved"})
    http_peer.reply("/moved", status=302, headers={"Location": elsewhere})
    http_peer.reply("/landing", json={"landed": True})
    output = await call(
        {
            "method": "POST",
            "url": f"{http_peer.base_url}/start",
            "json": {"a": 1},
            "headers": {"X-Trace": "t1", "Cookie": "session=1"},
            "credential": "key",
            "auth": "api_key",
        },
        allowed_hosts=("127.0.0.1", "localhost"),
        credentials={"key": ("api_key", {"api_key": "k"})},
    )
    assert output["body"] == {"landed": True}
    _start, moved, landing = http_peer.requests
    assert (moved.method, moved.body) == ("POST", b'{"a":1}')  # 307 keeps method and body
    assert moved.headers["authorization"] == "Bearer k"  # same origin
    assert (landing.method, landing.body) == ("GET", b"")  # 302 after POST: GET, no body
    assert "authorization" not in landing.headers  # another origin: no credential
    assert "cookie" not in landing.headers
    assert "x-trace" not in landing.headers  # nor any other header of the caller's
    assert "content-type" not in landing.headers


CUSTOM_HEADERS = {
    "X-Api-Token": "tok-7f3a9c2e",
    "X-Tenant": "acme",
    "Cookie": "session=1",
    "Accept": "application/json",
    "Accept-Language": "de",
    "User-Agent": "Orders/1.0",
}


async def test_a_redirect_to_another_origin_carries_only_the_safe_headers(
    http_peer: HttpPeer, other_http_peer: HttpPeer
) -> None:
    http_peer.reply(
        "/start", status=307, headers={"Location": f"{other_http_peer.base_url}/landing"}
    )
    other_http_peer.reply("/landing", json={"landed": True})
    output = await call(
        {
            "method": "POST",
            "url": f"{http_peer.base_url}/start",
            "json": {"a": 1},
            "headers": CUSTOM_HEADERS,
            "credential": "key",
            "auth": "api_key",
        },
        credentials={"key": ("api_key", {"api_key": "k", "header": "X-Key"})},
    )
    assert output["body"] == {"landed": True}
    [start] = http_peer.requests
    assert start.headers["x-api-token"] == "tok-7f3a9c2e"
    assert start.headers["x-key"] == "k"
    [landing] = other_http_peer.requests
    assert (landing.method, landing.body) == ("POST", b'{"a":1}')  # 307 keeps the body
    for name in ("x-api-token", "x-tenant", "cookie", "x-key", "authorization"):
        assert name not in landing.headers, name
    assert landing.headers["accept"] == "application/json"
    assert landing.headers["accept-language"] == "de"
    assert landing.headers["user-agent"] == "Orders/1.0"
    assert landing.headers["content-type"] == "application/json"  # the body went along
    assert landing.headers["idempotency-key"] == start.headers["idempotency-key"]


async def test_a_redirect_within_the_origin_keeps_every_header(http_peer: HttpPeer) -> None:
    http_peer.reply("/start", status=302, headers={"Location": "/moved"})
    http_peer.reply("/moved", json={"moved": True})
    await call({"url": f"{http_peer.base_url}/start", "headers": CUSTOM_HEADERS})
    _start, moved = http_peer.requests
    for name, value in CUSTOM_HEADERS.items():
        assert moved.headers[name.lower()] == value, name


async def test_a_redirect_to_a_refused_address_is_refused(http_peer: HttpPeer) -> None:
    http_peer.reply("/go", status=302, headers={"Location": "http://169.254.169.254/latest/"})
    with pytest.raises(PermanentError, match=r"169\.254\.169\.254: it is a cloud metadata"):
        await call({"url": f"{http_peer.base_url}/go"})


async def test_redirect_loops_stop_after_five_hops(http_peer: HttpPeer) -> None:
    http_peer.reply("/loop", status=301, headers={"Location": "/loop"})
    with pytest.raises(PermanentError, match="redirected more than 5 times"):
        await call({"url": f"{http_peer.base_url}/loop"})
    assert len(http_peer.requests) == 6


async def test_redirects_are_returned_when_not_followed(http_peer: HttpPeer) -> None:
    http_peer.reply("/go", status=302, headers={"Location": "/elsewhere"})
    output = await call({"url": f"{http_peer.base_url}/go", "follow_redirects": False})
    assert (output["status"], output["headers"]["location"]) == (302, "/elsewhere")


async def test_https_verifies_the_host_name_while_connecting_to_the_checked_address(
    https_peer: HttpPeer, tls_client_context: ssl.SSLContext
) -> None:
    https_peer.reply("/secure", json={"tls": True})
    output = await call(
        {"url": f"https://localhost:{https_peer.port}/secure"},
        verify=tls_client_context,
        allowed_hosts=("localhost",),
    )
    assert output["body"] == {"tls": True}
    assert https_peer.requests[0].headers["host"] == f"localhost:{https_peer.port}"
    # The certificate names localhost only: called by address, verification must fail.
    with pytest.raises(PermanentError, match=r"certificate of 127\.0\.0\.1 does not verify"):
        await call(
            {"url": f"https://127.0.0.1:{https_peer.port}/secure"}, verify=tls_client_context
        )


@pytest.mark.parametrize(
    ("status", "headers", "error", "delay"),
    [
        (503, {"Retry-After": "7"}, RetryableError, 7.0),
        (500, {}, RetryableError, None),
        (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, RetryableError, 0.0),
        (404, {}, PermanentError, None),
        (400, {}, PermanentError, None),
    ],
)
async def test_failure_statuses_are_retryable_or_permanent(
    http_peer: HttpPeer,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    delay: float | None,
) -> None:
    http_peer.reply("/fail", status=status, headers=headers, body=b"the reason")
    with pytest.raises(error, match=f"answered HTTP {status}: the reason") as raised:
        await call({"url": f"{http_peer.base_url}/fail"})
    if isinstance(raised.value, RetryableError):
        assert raised.value.delay == delay


async def test_expected_statuses_are_outputs(http_peer: HttpPeer) -> None:
    http_peer.reply("/missing", status=404, json={"found": False})
    output = await call({"url": f"{http_peer.base_url}/missing", "expected_status": [404]})
    assert (output["status"], output["body"]) == (404, {"found": False})


async def test_an_unreachable_server_is_retryable() -> None:
    with pytest.raises(RetryableError, match="could not connect"):
        await call({"url": f"http://127.0.0.1:{free_port()}/"})


async def test_a_slow_server_is_retryable_after_the_timeout(http_peer: HttpPeer) -> None:
    release = threading.Event()

    def stall(request: RecordedRequest) -> Reply:
        release.wait(timeout=10)
        return Reply()

    http_peer.respond("/slow", stall)
    try:
        with pytest.raises(RetryableError, match=r"took longer than 0\.2 s"):
            await call({"url": f"{http_peer.base_url}/slow", "timeout_seconds": 0.2})
    finally:
        release.set()


async def test_invalid_cfg_fails_permanently() -> None:
    with pytest.raises(PermanentError, match=r"\$\.method"):
        await call({"url": "http://127.0.0.1/", "method": "BREW"})
    with pytest.raises(PermanentError, match="`json` or `body`"):
        await call({"url": "http://127.0.0.1/", "json": {}, "body": "x"})
    with pytest.raises(PermanentError, match="`credential` and `auth`"):
        await call({"url": "http://127.0.0.1/", "credential": "key"})
    with pytest.raises(PermanentError, match="not a valid URL"):
        await call({"url": "http://[zz]/"})


async def test_a_malformed_request_is_permanent(http_peer: HttpPeer) -> None:
    url = f"{http_peer.base_url}/x"
    with pytest.raises(PermanentError, match="cannot be sent as given"):
        await call({"url": url, "headers": {"X-Name": "café"}})
    with pytest.raises(PermanentError, match="cannot be sent as given"):
        await call({"url": url, "headers": {"X-Name": "a\r\nInjected: yes"}})
    assert http_peer.requests == []


async def test_the_query_adds_to_parameters_already_in_the_url(http_peer: HttpPeer) -> None:
    http_peer.reply("/search", json={})
    await call({"url": f"{http_peer.base_url}/search?a=1", "query": {"b": "2"}})
    assert http_peer.requests[0].query == {"a": ["1"], "b": ["2"]}


async def test_an_accepted_post_whose_answer_stalls_is_not_retried(
    broken_answer_peer: BrokenAnswerPeer,
) -> None:
    broken_answer_peer.hang = True
    with pytest.raises(PermanentError, match=r"was accepted \(HTTP 201\), but its answer did not"):
        await call(
            {"method": "POST", "url": f"{broken_answer_peer.base_url}/x", "timeout_seconds": 0.3}
        )
    assert broken_answer_peer.requests == 1


async def test_a_get_whose_answer_breaks_off_is_retryable(
    broken_answer_peer: BrokenAnswerPeer,
) -> None:
    with pytest.raises(RetryableError, match=r"reading the answer of .* failed"):
        await call({"url": f"{broken_answer_peer.base_url}/x"})


async def test_a_token_request_whose_answer_breaks_off_is_retryable(
    broken_answer_peer: BrokenAnswerPeer, http_peer: HttpPeer
) -> None:
    """Asking for an OAuth2 token again has no effect: unlike an accepted POST, it retries."""
    fields = {
        "token_url": f"{broken_answer_peer.base_url}/token",
        "client_id": "c",
        "client_secret": "s",
    }
    with pytest.raises(RetryableError, match=r"reading the answer of .* failed"):
        await call(
            {
                "url": f"{http_peer.base_url}/api",
                "credential": "oauth",
                "auth": "oauth2_client_credentials",
            },
            credentials={"oauth": ("oauth2_client_credentials", fields)},
        )
    assert http_peer.requests == []
