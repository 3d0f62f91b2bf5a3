"""Fake webhook senders on loopback for the registration tests, over real HTTP.

`FakeGitHub` serves GitHub's repository hooks API (list, create, update, delete under
/repos/{owner}/{name}/hooks, bearer token required, the secret never shown back) and delivers
events to a hook's URL signed with the hook's secret (`X-Hub-Signature-256`), as GitHub does.
`create_delay_seconds` makes creates slow (the hook appears when the delay is over, whether or
not the client is still waiting); `down` answers 503 to everything.

`FakeSubscriptions` serves a Graph-like subscription API: POST /subscriptions makes one that
lapses `lifetime_seconds` later unless PATCH /subscriptions/{id} renews it in time; DELETE
removes it. It records every lapse (a renewal or check that found one expired).
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import msgspec

from server.triggers.signatures import github_signature
from tests.support.processes import free_port

MASKED = "********"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client killed mid-request is what some tests are about


class _Answer(msgspec.Struct, frozen=True):
    status: int
    body: Any = None


class _FakeHttp:
    """A threaded JSON server calling `self.route(method, path, body, headers)`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = msgspec.json.decode(raw) if raw else None
                path = self.path.split("?", 1)[0]
                with fake.lock:
                    fake.requests.append((self.command, path))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = fake.route(self.command, path, body, headers)
                data = b"" if answer.body is None else msgspec.json.encode(answer.body)
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def route(self, method: str, path: str, body: Any, headers: dict[str, str]) -> _Answer:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeGitHub(_FakeHttp):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.hooks: dict[int, dict[str, Any]] = {}
        self.create_delay_seconds = 0.0
        self.creates_started = 0
        self.creates_done = 0
        self.down = False
        self._ids = itertools.count(1001)

    def repository_hooks(self, repository: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(h) for h in self.hooks.values() if h["repository"] == repository]

    def delete_behind_our_back(self, hook_id: int) -> None:
        with self.lock:
            del self.hooks[hook_id]

    def deliver(self, hook: dict[str, Any], event: str, payload: dict[str, Any]) -> int:
        """POST `payload` to the hook's URL signed with its secret, as GitHub does."""
        body = msgspec.json.encode(payload)
        headers = {
            "content-type": "application/json",
            "x-github-event": event,
            "x-github-delivery": str(uuid.uuid4()),
            "x-hub-signature-256": github_signature(hook["config"]["secret"], body),
        }
        return httpx.post(
            hook["config"]["url"], content=body, headers=headers, timeout=10
        ).status_code

    def route(self, method: str, path: str, body: Any, headers: dict[str, str]) -> _Answer:
        if self.down:
            return _Answer(503, {"message": "GitHub is down for maintenance"})
        if headers.get("authorization") != f"Bearer {self.token}":
            return _Answer(401, {"message": "Bad credentials"})
        parts = path.strip("/").split("/")
        if len(parts) < 4 or parts[0] != "repos" or parts[3] != "hooks":
            return _Answer(404, {"message": "Not Found"})
        repository = f"{parts[1]}/{parts[2]}"
        if len(parts) == 4 and method == "GET":
            return _Answer(200, [_shown(h) for h in self.repository_hooks(repository)])
        if len(parts) == 4 and method == "POST":
            return self._create(repository, body)
        hook_id = int(parts[4]) if len(parts) == 5 and parts[4].isdigit() else -1
        with self.lock:
            hook = self.hooks.get(hook_id)
            if hook is None or hook["repository"] != repository:
                return _Answer(404, {"message": "Not Found"})
            if method == "DELETE":
                del self.hooks[hook_id]
                return _Answer(204)
            if method == "PATCH":
                hook["events"] = body.get("events", hook["events"])
                hook["active"] = body.get("active", hook["active"])
                hook["config"] = {**hook["config"], **body.get("config", {})}
            return _Answer(200, _shown(hook))

    def _create(self, repository: str, body: dict[str, Any]) -> _Answer:
        with self.lock:
            self.creates_started += 1
        time.sleep(self.create_delay_seconds)  # the hook is made even if the caller left
        with self.lock:
            hook_id = next(self._ids)
            self.hooks[hook_id] = {
                "id": hook_id,
                "repository": repository,
                "name": body.get("name"),
                "active": body.get("active", True),
                "events": body.get("events", ["push"]),
                "config": dict(body["config"]),
            }
            self.creates_done += 1
            return _Answer(201, _shown(self.hooks[hook_id]))


def _shown(hook: dict[str, Any]) -> dict[str, Any]:
    config = (
        {**hook["config"], "secret": MASKED} if hook["config"].get("secret") else hook["config"]
    )
    return {k: v for k, v in {**hook, "config": config}.items() if k != "repository"}


class FakeSubscriptions(_FakeHttp):
    def __init__(self, lifetime_seconds: float) -> None:
        super().__init__()
        self.lifetime = dt.timedelta(seconds=lifetime_seconds)
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.renewals = 0
        self.lapses: list[str] = []
        self._ids = itertools.count(1)

    def active(self) -> list[dict[str, Any]]:
        now = dt.datetime.now(dt.UTC)
        with self.lock:
            return [dict(s) for s in self.subscriptions.values() if s["expires"] > now]

    def route(self, method: str, path: str, body: Any, headers: dict[str, str]) -> _Answer:
        now = dt.datetime.now(dt.UTC)
        parts = path.strip("/").split("/")
        if parts[0] != "subscriptions":
            return _Answer(404, {"error": "no such path"})
        with self.lock:
            if method == "POST" and len(parts) == 1:
                sub_id = f"sub-{next(self._ids)}"
                self.subscriptions[sub_id] = {
                    "id": sub_id, "request": body, "expires": now + self.lifetime,
                }  # fmt: skip
                return _Answer(201, self._shown(sub_id))
            sub = self.subscriptions.get(parts[1]) if len(parts) == 2 else None
            if sub is None:
                return _Answer(404, {"error": "no such subscription"})
            if sub["expires"] <= now:
                self.lapses.append(sub["id"])
            if method == "DELETE":
                del self.subscriptions[sub["id"]]
                return _Answer(204)
            if method == "PATCH":
                sub["expires"] = now + self.lifetime
                self.renewals += 1
            return _Answer(200, self._shown(sub["id"]))

    def _shown(self, sub_id: str) -> dict[str, Any]:
        sub = self.subscriptions[sub_id]
        return {"id": sub_id, "expirationDateTime": sub["expires"].isoformat()}


def serving(fake: _FakeHttp) -> Iterator[Any]:
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
