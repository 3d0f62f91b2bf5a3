"""What the webhook registration tests share: `switchyard run` processes whose PUBLIC_URL is an
api process's address (real HTTP, so a fake sender can deliver to it), the fake senders as
fixtures, and reads of a webhook's registration through the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from tests.faults.drill import Process
from tests.support.credentials import API_TOKEN, ENCRYPTION_KEY
from tests.support.fake_senders import FakeGitHub, FakeSubscriptions, serving
from tests.support.processes import environment, free_port
from tests.support.waiting import eventually

GITHUB_TOKEN: Final = "ghp_test-token-of-the-fake-github"
CHECK_SECONDS: Final = "2"
CALL_TIMEOUT_SECONDS: Final = "5"
StartProcess = Callable[..., Process]


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    yield from serving(FakeGitHub(GITHUB_TOKEN))


@pytest.fixture
def fake_subscriptions() -> Iterator[FakeSubscriptions]:
    yield from serving(FakeSubscriptions(lifetime_seconds=3.0))


@pytest.fixture
def start_process(database_dsn: str, tmp_path: Path) -> Iterator[StartProcess]:
    """`start(roles, public_url=None, **settings)`: a ready `switchyard run` on this test's
    database; without `public_url` its PUBLIC_URL is its own address."""
    with ExitStack() as stack:
        names = iter(range(1000))

        def start(roles: str, public_url: str | None = None, **settings: str) -> Process:
            port = free_port()
            env = environment(
                DATABASE_URL=database_dsn,
                ROLES=roles,
                API_TOKENS=API_TOKEN,
                ENCRYPTION_KEYS=ENCRYPTION_KEY,
                HTTP_ALLOWED_HOSTS="127.0.0.1",
                PUBLIC_URL=public_url or f"http://127.0.0.1:{port}",
                REGISTRATION_CHECK_SECONDS=CHECK_SECONDS,
                REGISTRATION_CALL_TIMEOUT_SECONDS=CALL_TIMEOUT_SECONDS,
                JOB_POLL_INTERVAL_SECONDS="0.2",
                SHUTDOWN_GRACE_SECONDS="5",
                **settings,
            )
            process = Process([], env, tmp_path, f"{roles}-{next(names)}", port=port)
            stack.callback(process.close)
            process.wait_ready()
            return process

        yield start


def api_client(process: Process) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=process.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10
    )


async def create_github_credential(client: httpx.AsyncClient, fake: FakeGitHub) -> None:
    response = await client.post(
        "/api/v1/credentials",
        json={
            "name": "github",
            "type": "api_key",
            "data": {"api_key": GITHUB_TOKEN, "base_url": fake.base_url},
        },
    )
    assert response.status_code == 201, response.text


async def registration_when(
    client: httpx.AsyncClient,
    webhook_id: str,
    ready: Callable[[dict[str, Any]], bool],
    *,
    within: float = 20.0,
) -> dict[str, Any]:
    """The webhook's `registration_status` once `ready(status)` holds."""

    async def status() -> dict[str, Any]:
        body: dict[str, Any] = (await client.get(f"/api/v1/webhooks/{webhook_id}")).json()
        found: dict[str, Any] = body.get("registration_status") or {}
        return found

    return await eventually(
        status, until=lambda s: bool(s) and ready(s), what="registration status", within=within,
        every=0.1,
    )  # fmt: skip
