"""The `http_request` action against a real HTTP(S) server on loopback."""

from __future__ import annotations

import base64
import ssl
from typing import Any

import msgspec
import pytest

from server.actions.guarded_http import OutboundClient
from server.actions.http_request import HttpRequestAction
from server.actions.oauth2 import ClientCredentialsTokens
from server.queue.jobs import PermanentError
from tests.support.action_contexts import Credentials, action_context
from tests.support.peers import HttpPeer, RecordedRequest, Reply


class FakeClock:
    """The token cache's clock, moved by the test instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def http_action(
    clock: FakeClock | None = None, verify: ssl.SSLContext | None = None
) -> HttpRequestAction:
    client = OutboundClient(verify=verify)
    return HttpRequestAction(client, ClientCredentialsTokens(client, clock=clock or FakeClock()))


async def call(cfg: dict[str, Any], **options: Any) -> dict[str, Any]:
    action = options.pop("action", None) or http_action()
    return await action.run(action_context(cfg, **options))


async def test_get_sends_query_headers_and_idempotency_key_and_parses_json(
    http_peer: HttpPeer,
) -> None:
    http_peer.reply("/items", json={"items": [1, 2]}, headers={"X-Total": "2"})
    context = action_context(
        {"url": f"{http_peer.base_url}/items", "query": {"q": "a b"}, "headers": {"X-Trace": "t1"}}
    )
    output = await http_action().run(context)
    assert output["status"] == 200
    assert output["body"] == {"items": [1, 2]}
    assert output["headers"]["x-total"] == "2"
    [request] = http_peer.requests_to("/items")
    assert (request.method, request.query) == ("GET", {"q": ["a b"]})
    assert request.headers["x-trace"] == "t1"
    assert request.headers["idempotency-key"] == context.idempotency_key
    assert request.headers["host"] == f"127.0.0.1:{http_peer.port}"


async def test_post_json_and_raw_body(http_peer: HttpPeer) -> None:
    http_peer.reply(
        "/echo", status=201, body=b"plain answer", headers={"Content-Type": "text/plain"}
    )
    output = await call({"method": "POST", "url": f"{http_peer.base_url}/echo", "json": {"a": 1}})
    assert (output["status"], output["body"]) == (201, "plain answer")
    await call(
        {
            "method": "PUT",
            "url": f"{http_peer.base_url}/echo",
            "body": "<x/>",
            "headers": {"Content-Type": "application/xml", "Idempotency-Key": "mine"},
        }
    )
    json_request, raw_request = http_peer.requests_to("/echo")
    assert json_request.json() == {"a": 1}
    assert json_request.headers["content-type"] == "application/json"
    assert (raw_request.method, raw_request.body) == ("PUT", b"<x/>")
    assert raw_request.headers["content-type"] == "application/xml"
    assert raw_request.headers["idempotency-key"] == "mine"


async def test_basic_and_api_key_credentials_authenticate(http_peer: HttpPeer) -> None:
    http_peer.reply("/private", json={})
    credentials: Credentials = {
        "login": ("basic_auth", {"username": "ann", "password": "s3cret"}),
        "bearer": ("api_key", {"api_key": "k-1"}),
        "header": ("api_key", {"api_key": "k-2", "header": "X-API-Key"}),
    }
    url = f"{http_peer.base_url}/private"
    for name, kind in [("login", "basic_auth"), ("bearer", "api_key"), ("header", "api_key")]:
        await call({"url": url, "credential": name, "auth": kind}, credentials=credentials)
    basic, bearer, header = http_peer.requests_to("/private")
    assert basic.headers["authorization"] == "Basic " + base64.b64encode(b"ann:s3cret").decode()
    assert bearer.headers["authorization"] == "Bearer k-1"
    assert header.headers["x-api-key"] == "k-2"
    assert "authorization" not in header.headers


def token_endpoint(http_peer: HttpPeer) -> None:
    def issue(request: RecordedRequest) -> Reply:
        number = len(http_peer.requests_to("/token"))
        body = {"access_token": f"token-{number}", "token_type": "Bearer", "expires_in": 120}
        return Reply(headers={"Content-Type": "application/json"}, body=msgspec.json.encode(body))

    http_peer.respond("/token", issue)


def oauth2_credentials(http_peer: HttpPeer) -> Credentials:
    fields = {
        "token_url": f"{http_peer.base_url}/token",
        "client_id": "client one",
        "client_secret": "secret/1",
        "scopes": ["read", "write"],
    }
    return {"oauth": ("oauth2_client_credentials", fields)}


async def test_oauth2_token_is_fetched_once_reused_then_refreshed_after_expiry(
    http_peer: HttpPeer,
) -> None:
    token_endpoint(http_peer)
    http_peer.reply("/api", json={"ok": True})
    clock = FakeClock()
    action = http_action(clock)
    cfg = {
        "url": f"{http_peer.base_url}/api",
        "credential": "oauth",
        "auth": "oauth2_client_credentials",
    }
    credentials = oauth2_credentials(http_peer)
    await call(cfg, action=action, credentials=credentials)
    await call(cfg, action=action, credentials=credentials)
    clock.now += 120  # the token's lifetime has passed
    await call(cfg, action=action, credentials=credentials)

    [first_fetch, second_fetch] = http_peer.requests_to("/token")
    assert first_fetch.form() == {"grant_type": "client_credentials", "scope": "read write"}
    expected = base64.b64encode(b"client+one:secret%2F1").decode()  # RFC 6749 2.3.1
    assert first_fetch.headers["authorization"] == f"Basic {expected}"
    assert "idempotency-key" not in second_fetch.headers
    used = [request.headers["authorization"] for request in http_peer.requests_to("/api")]
    assert used == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]


async def test_oauth2_token_refused_by_the_api_is_replaced_once(http_peer: HttpPeer) -> None:
    token_endpoint(http_peer)

    def api(request: RecordedRequest) -> Reply:
        ok = request.headers["authorization"] == "Bearer token-2"
        return Reply(status=200 if ok else 401, body=b"")

    http_peer.respond("/api", api)
    cfg = {
        "url": f"{http_peer.base_url}/api",
        "credential": "oauth",
        "auth": "oauth2_client_credentials",
    }
    output = await call(cfg, credentials=oauth2_credentials(http_peer))
    assert output["status"] == 200
    assert len(http_peer.requests_to("/token")) == 2


async def test_a_failing_token_endpoint_fails_the_request(http_peer: HttpPeer) -> None:
    http_peer.reply("/token", status=401, json={"error": "invalid_client"})
    cfg = {
        "url": f"{http_peer.base_url}/api",
        "credential": "oauth",
        "auth": "oauth2_client_credentials",
    }
    with pytest.raises(PermanentError, match="token endpoint answered HTTP 401"):
        await call(cfg, credentials=oauth2_credentials(http_peer))
    assert http_peer.requests_to("/api") == []


async def test_an_answer_over_the_size_cap_is_refused(http_peer: HttpPeer) -> None:
    http_peer.reply("/big", body=b"x" * 5000)
    with pytest.raises(PermanentError, match="larger than 1000 bytes"):
        await call({"url": f"{http_peer.base_url}/big", "max_response_bytes": 1000})
    output = await call({"url": f"{http_peer.base_url}/big", "max_response_bytes": 5000})
    assert len(output["body"]) == 5000
