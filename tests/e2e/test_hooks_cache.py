"""The webhook intake's cache of endpoints and routes: repeat deliveries are served from it,
and every change, from this process or made elsewhere (another replica, a tool writing SQL),
drops it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest

from config.settings import Role, Settings
from server.api.hook_cache import EndpointCache
from server.app import create_app
from tests.e2e.test_hooks_auth import BODY, echo_workflow
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.hook_senders import create_webhook
from tests.support.waiting import eventually
from tests.support.workflows import import_published

JSON = {"content-type": "application/json"}
PROPAGATION_SECONDS = 5.0


@pytest.fixture
async def app_and_client(
    settings_for: Callable[..., Settings],
) -> AsyncIterator[tuple[EndpointCache, httpx.AsyncClient]]:
    app = create_app(settings_for(roles=frozenset({Role.API})))
    async with serving(app, token=API_TOKEN) as client:
        cache: EndpointCache = app.state.endpoint_cache
        # The listener connects in the background.
        await eventually(
            lambda: cache.live, what="the config listener connected", within=PROPAGATION_SECONDS
        )
        yield cache, client


async def test_repeat_deliveries_are_served_from_the_cache(
    app_and_client: tuple[EndpointCache, httpx.AsyncClient],
) -> None:
    cache, client = app_and_client
    await create_webhook(client)
    await import_published(client, echo_workflow())
    hits = await warm(cache, client)  # the set-up's own notifications may arrive late
    for _ in range(2):
        answer = await client.post("/hooks/orders", content=BODY, headers=JSON)
        assert answer.status_code == 202, answer.text
    assert cache.hits == hits + 2


async def test_a_change_made_elsewhere_drops_the_cached_endpoint(
    app_and_client: tuple[EndpointCache, httpx.AsyncClient], database_dsn: str
) -> None:
    _, client = app_and_client
    await create_webhook(client)
    await import_published(client, echo_workflow())
    assert (await client.post("/hooks/orders", content=BODY, headers=JSON)).status_code == 202
    other = await asyncpg.connect(database_dsn)  # another replica, or a tool
    try:
        await other.execute("UPDATE webhook_endpoint SET enabled = false WHERE path = 'orders'")

        async def refused() -> bool:
            answer = await client.post("/hooks/orders", content=BODY, headers=JSON)
            return answer.status_code == 404

        await eventually(refused, what="the disabled endpoint refused", within=PROPAGATION_SECONDS)
    finally:
        await other.close()


async def test_a_subscription_changed_elsewhere_reroutes_the_next_deliveries(
    app_and_client: tuple[EndpointCache, httpx.AsyncClient], database_dsn: str
) -> None:
    _, client = app_and_client
    await create_webhook(client)
    await import_published(client, echo_workflow())
    first = (await client.post("/hooks/orders", content=BODY, headers=JSON)).json()
    assert first["outcome"] == "accepted"
    other = await asyncpg.connect(database_dsn)
    try:
        await other.execute("UPDATE workflow_subscription SET is_active = false")

        async def unmatched() -> bool:
            answer = await client.post("/hooks/orders", content=BODY, headers=JSON)
            return bool(answer.json()["outcome"] == "no_match")

        await eventually(
            unmatched, what="the deactivated subscription unmatched", within=PROPAGATION_SECONDS
        )
    finally:
        await other.close()


async def test_an_api_write_drops_the_cache_before_its_answer(
    app_and_client: tuple[EndpointCache, httpx.AsyncClient],
) -> None:
    cache, client = app_and_client
    await create_webhook(client)
    workflow_id = await import_published(client, echo_workflow())
    assert (await client.post("/hooks/orders", content=BODY, headers=JSON)).status_code == 202
    changed = await client.patch(f"/api/v1/workflows/{workflow_id}", json={"is_active": False})
    assert changed.status_code == 200, changed.text
    # No waiting: this process's own write emptied the cache before answering.
    answer = await client.post("/hooks/orders", content=BODY, headers=JSON)
    assert answer.json()["outcome"] == "no_match"
    assert cache.hits == 0


async def warm(cache: EndpointCache, client: httpx.AsyncClient) -> int:
    """Deliver until one delivery is served from the cache (the notifications of the set-up's
    own commits arrive asynchronously and may empty it once more); the hits so far."""
    before = cache.hits

    async def deliver() -> int:
        answer = await client.post("/hooks/orders", content=BODY, headers=JSON)
        assert answer.status_code == 202, answer.text
        return cache.hits

    return await eventually(
        deliver,
        until=lambda hits: hits > before,
        what="a delivery served from the cache",
        within=PROPAGATION_SECONDS,
        every=0,
    )


async def kept_through(
    cache: EndpointCache, client: httpx.AsyncClient, request: Callable[[], Awaitable[None]]
) -> bool:
    """Whether the cache still serves the endpoint after `request`. Tried a few times: a late
    notification of the set-up may empty the cache once, but an emptying request always does."""
    for _ in range(3):
        hits = await warm(cache, client)
        await request()
        assert (await client.post("/hooks/orders", content=BODY, headers=JSON)).status_code == 202
        if cache.hits == hits + 1:
            return True
    return False


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/api/v1/workflows", {"authorization": ""}),
        ("POST", "/api/v1/webhooks", {"authorization": "Bearer not-a-token"}),
        ("DELETE", "/api/v1/workflows/00000000-0000-0000-0000-000000000000", {"authorization": ""}),
        ("POST", "/api/v1/no-such-route", {"authorization": ""}),
    ],
)
async def test_an_unauthenticated_write_leaves_the_cache_alone(
    app_and_client: tuple[EndpointCache, httpx.AsyncClient],
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    cache, client = app_and_client
    await create_webhook(client)
    await import_published(client, echo_workflow())

    async def refused() -> None:
        answer = await client.request(method, path, json={}, headers=headers)
        assert answer.status_code in {401, 404}, answer.text

    assert await kept_through(cache, client, refused)


async def test_a_refused_authenticated_write_leaves_the_cache_alone(
    app_and_client: tuple[EndpointCache, httpx.AsyncClient],
) -> None:
    cache, client = app_and_client
    await create_webhook(client)
    await import_published(client, echo_workflow())

    async def conflict() -> None:
        taken = await client.post(
            "/api/v1/webhooks",
            json={"trigger_key": "orders", "path": "orders", "auth": {"type": "none"}},
        )
        assert taken.status_code == 409, taken.text

    assert await kept_through(cache, client, conflict)


async def test_an_authenticated_create_drops_the_cache(
    app_and_client: tuple[EndpointCache, httpx.AsyncClient],
) -> None:
    cache, client = app_and_client
    await create_webhook(client)
    await import_published(client, echo_workflow())
    hits = await warm(cache, client)
    await create_webhook(client, path="other")
    assert (await client.post("/hooks/orders", content=BODY, headers=JSON)).status_code == 202
    assert cache.hits == hits  # the create emptied it: this delivery read the database
