"""Webhook registration end to end: a `switchyard run` process (api, worker, scheduler) keeps
hooks at a fake GitHub and subscriptions at a fake subscription API, over real HTTP on loopback
(HTTP_ALLOWED_HOSTS allows it), checking every 2 s."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.fake_senders import FakeGitHub, FakeSubscriptions
from tests.support.registration import (
    GITHUB_TOKEN,
    StartProcess,
    api_client,
    create_github_credential,
    registration_when,
)
from tests.support.waiting import eventually
from tests.support.workflows import wait_for

pytestmark = pytest.mark.timeout(120)  # real processes, checks every 2 s

REPOSITORY = "acme/shop"
ALL_ROLES = "api,worker,scheduler"


async def _create_github_webhook(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/webhooks",
        json={
            "trigger_key": "shop-push",
            "path": "github/shop",
            "auth": {"type": "github"},
            "registration": {
                "provider": "github",
                "credential": "github",
                "repository": REPOSITORY,
                "events": ["push", "pull_request"],
            },
            **fields,
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _hooks_when(fake: FakeGitHub, ready: Any, what: str) -> list[dict[str, Any]]:
    return await eventually(
        lambda: fake.repository_hooks(REPOSITORY), until=ready, what=what, within=20, every=0.1
    )


async def test_github_hook_is_created_repaired_updated_and_removed(
    start_process: StartProcess, fake_github: FakeGitHub
) -> None:
    server = start_process(ALL_ROLES)
    async with api_client(server) as client:
        await create_github_credential(client, fake_github)
        webhook = await _create_github_webhook(client)
        # The answer reads the endpoint after its commit, when the scheduler (woken by the
        # commit's notification) may already have registered it.
        assert webhook["registration_status"]["state"] in {"pending", "registered"}
        secret = webhook["generated_secret"]
        response = await client.post(
            "/api/v1/workflows/import",
            params={"publish": "true"},
            json={
                "name": "On push",
                "steps": [{"key": "note", "kind": "action", "action_key": "transform",
                           "cfg": {"output": {"ref": "{{ trigger.ref }}"}}}],
                "edges": [],
                "subscriptions": [{"trigger_key": "shop-push", "filter_conditions": {}}],
            },
        )  # fmt: skip
        assert response.status_code == 201, response.text

        # Created: one hook with our URL, the endpoint's secret and its events.
        status = await registration_when(
            client, webhook["id"], lambda s: s["state"] == "registered"
        )
        [hook] = fake_github.repository_hooks(REPOSITORY)
        assert hook["config"]["url"] == f"{server.url}/hooks/github/shop"
        assert hook["config"]["secret"] == secret
        assert hook["config"]["content_type"] == "json"
        assert sorted(hook["events"]) == ["pull_request", "push"]
        assert status["external_id"] == str(hook["id"])
        assert status["last_error"] is None
        assert status["checked_at"] is not None

        # A delivery the fake signs with that secret starts the subscribed workflow.
        assert await _deliver(fake_github, hook) == 202
        executions = await eventually(
            lambda: _executions(client), what="an execution of the pushed workflow"
        )
        finished = await wait_for(client, executions[0]["id"])
        assert finished["status"] == "SUCCESS", finished

        # Deleted at the sender: re-created within one check.
        fake_github.delete_behind_our_back(hook["id"])
        [again] = await _hooks_when(fake_github, lambda h: len(h) == 1, "the hook re-created")
        assert again["id"] != hook["id"]
        assert again["config"]["secret"] == secret
        await registration_when(
            client, webhook["id"], lambda s: s["external_id"] == str(again["id"])
        )

        # Pointing elsewhere at the sender: corrected.
        with fake_github.lock:
            fake_github.hooks[again["id"]]["config"]["url"] = "https://elsewhere.example/hook"
        await _hooks_when(
            fake_github,
            lambda h: len(h) == 1 and h[0]["config"]["url"] == hook["config"]["url"],
            "the hook pointed back at us",
        )

        # Secret rotated: the hook is updated with the new one.
        response = await client.patch(
            f"/api/v1/webhooks/{webhook['id']}", json={"auth": {"generate_secret": True}}
        )
        assert response.status_code == 200, response.text
        rotated = response.json()["generated_secret"]
        await _hooks_when(
            fake_github,
            lambda h: len(h) == 1 and h[0]["config"]["secret"] == rotated,
            "the hook holding the rotated secret",
        )

        # Events changed: updated in place.
        response = await client.patch(
            f"/api/v1/webhooks/{webhook['id']}",
            json={"registration": {"provider": "github", "credential": "github",
                                   "repository": REPOSITORY, "events": ["release"]}},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        await _hooks_when(
            fake_github, lambda h: len(h) == 1 and h[0]["events"] == ["release"], "events updated"
        )

        # Disabled: removed at the sender; enabled again: registered again.
        await client.patch(f"/api/v1/webhooks/{webhook['id']}", json={"enabled": False})
        await _hooks_when(fake_github, lambda h: h == [], "the hook removed")
        status = await registration_when(client, webhook["id"], lambda s: s["state"] == "removed")
        assert status["external_id"] is None
        await client.patch(f"/api/v1/webhooks/{webhook['id']}", json={"enabled": True})
        await _hooks_when(fake_github, lambda h: len(h) == 1, "the hook back")
        await registration_when(client, webhook["id"], lambda s: s["state"] == "registered")

        # Deleted: removed at the sender, nothing stale left.
        assert (await client.delete(f"/api/v1/webhooks/{webhook['id']}")).status_code == 204
        await _hooks_when(fake_github, lambda h: h == [], "the hook removed with the endpoint")
        await eventually(
            lambda: _stale(client), until=lambda items: items == [], what="no stale registration"
        )
        assert server.terminate(15) < 15
    assert GITHUB_TOKEN not in server.log_path.read_text()
    assert secret not in server.log_path.read_text()


async def test_sender_down_shows_failed_with_its_error_then_registered_and_stale_removal(
    start_process: StartProcess, fake_github: FakeGitHub
) -> None:
    fake_github.down = True
    server = start_process(ALL_ROLES)
    async with api_client(server) as client:
        await create_github_credential(client, fake_github)
        webhook = await _create_github_webhook(client)
        failed = await registration_when(client, webhook["id"], lambda s: s["state"] == "failed")
        assert "HTTP 503" in failed["last_error"]
        assert "GitHub is down for maintenance" in failed["last_error"]
        assert GITHUB_TOKEN not in failed["last_error"]
        metrics = (await client.get("/metrics")).text
        assert 'switchyard_webhook_registrations{stale="false",state="failed"} 1.0' in metrics
        health = await _trigger_registrations(client, "shop-push")
        assert health[0]["status"]["state"] == "failed"

        fake_github.down = False
        await registration_when(client, webhook["id"], lambda s: s["state"] == "registered")
        assert len(fake_github.repository_hooks(REPOSITORY)) == 1
        metrics = (await client.get("/metrics")).text
        assert 'switchyard_webhook_registrations{stale="false",state="registered"} 1.0' in metrics

        # Deleted while the sender is unreachable: the deletion completes, the registration is
        # listed as stale, and removed once the sender is back.
        fake_github.down = True
        assert (await client.delete(f"/api/v1/webhooks/{webhook['id']}")).status_code == 204
        assert (await client.get(f"/api/v1/webhooks/{webhook['id']}")).status_code == 404
        [stale] = await eventually(
            lambda: _stale(client),
            until=lambda items: len(items) == 1 and items[0]["status"]["state"] == "failed",
            what="the stale registration, failed",
        )
        assert stale["webhook_id"] == webhook["id"]
        assert stale["path"] == "github/shop"
        assert "HTTP 503" in stale["status"]["last_error"]
        fake_github.down = False
        await eventually(
            lambda: _stale(client), until=lambda items: items == [], what="the stale one removed",
            within=20,
        )  # fmt: skip
        assert fake_github.repository_hooks(REPOSITORY) == []


async def test_expiring_http_subscription_is_renewed_before_it_lapses_and_removed(
    start_process: StartProcess, fake_subscriptions: FakeSubscriptions
) -> None:
    server = start_process(ALL_ROLES)
    base = fake_subscriptions.base_url
    async with api_client(server) as client:
        response = await client.post(
            "/api/v1/webhooks",
            json={
                "trigger_key": "mail",
                "path": "graph/mail",
                "auth": {"type": "header_token"},
                "registration": {
                    "provider": "http",
                    "subscribe": {"method": "POST", "url": f"{base}/subscriptions",
                                  "json": {"notificationUrl": "{{ callback_url }}",
                                           "clientState": "{{ secret }}"}},
                    "renew": {"method": "PATCH", "url": base + "/subscriptions/{{ subscription.id }}"},
                    "unsubscribe": {"method": "DELETE",
                                    "url": base + "/subscriptions/{{ subscription.id }}"},
                    "renew_every_seconds": 1,
                },
            },
        )  # fmt: skip
        assert response.status_code == 201, response.text
        webhook = response.json()
        first = await registration_when(client, webhook["id"], lambda s: s["state"] == "registered")
        [subscription] = fake_subscriptions.active()
        assert subscription["request"] == {
            "notificationUrl": f"{server.url}/hooks/graph/mail",
            "clientState": webhook["generated_secret"],
        }
        assert first["external_id"] == subscription["id"]
        assert first["expires_at"] is not None
        # The fake lets a subscription lapse after 3 s: renewed every second, it never does.
        await eventually(
            lambda: fake_subscriptions.renewals, until=lambda n: n >= 5, what="five renewals",
            within=20,
        )  # fmt: skip
        assert fake_subscriptions.lapses == []
        assert [s["id"] for s in fake_subscriptions.active()] == [subscription["id"]]
        later = await registration_when(
            client, webhook["id"], lambda s: s["expires_at"] > first["expires_at"]
        )
        assert later["state"] == "registered"
        metrics = (await client.get("/metrics")).text
        assert "switchyard_webhook_registration_expiry_seconds{" in metrics

        await client.patch(f"/api/v1/webhooks/{webhook['id']}", json={"enabled": False})
        await eventually(
            fake_subscriptions.active, until=lambda s: s == [], what="unsubscribed", within=20
        )
        await registration_when(client, webhook["id"], lambda s: s["state"] == "removed")


async def _deliver(fake: FakeGitHub, hook: dict[str, Any]) -> int:
    return await asyncio.to_thread(
        fake.deliver, hook, "push", {"ref": "refs/heads/main", "commits": []}
    )


async def _executions(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get("/api/v1/executions")).json()["items"]
    return items


async def _stale(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/webhooks/registrations/stale")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _trigger_registrations(client: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    items = (await client.get("/api/v1/registry/triggers")).json()["items"]
    found: list[dict[str, Any]] = next(t["registrations"] for t in items if t["trigger_key"] == key)
    return found


async def test_http_subscription_without_renew_call_is_replaced_make_before_break(
    start_process: StartProcess, fake_subscriptions: FakeSubscriptions
) -> None:
    server = start_process(ALL_ROLES)
    base = fake_subscriptions.base_url
    async with api_client(server) as client:
        response = await client.post(
            "/api/v1/webhooks",
            json={
                "trigger_key": "channel",
                "path": "push/channel",
                "auth": {"type": "none"},
                "registration": {
                    "provider": "http",
                    "subscribe": {"url": f"{base}/subscriptions",
                                  "json": {"address": "{{ callback_url }}"}},
                    "unsubscribe": {"method": "DELETE",
                                    "url": base + "/subscriptions/{{ subscription.id }}"},
                    "renew_every_seconds": 1,
                },
            },
        )  # fmt: skip
        assert response.status_code == 201, response.text
        webhook = response.json()
        await registration_when(client, webhook["id"], lambda s: s["state"] == "registered")
        await eventually(
            lambda: _requests(fake_subscriptions, "DELETE"),
            until=lambda n: n >= 3,
            what="three subscriptions replaced",
            within=20,
        )
        # Each replacement subscribed first, then unsubscribed the previous one.
        assert fake_subscriptions.lapses == []
        await eventually(  # two for a moment, between the new subscribe and the old's removal
            lambda: len(fake_subscriptions.active()), until=lambda n: n == 1, what="one active"
        )
        await client.delete(f"/api/v1/webhooks/{webhook['id']}")
        await eventually(
            fake_subscriptions.active, until=lambda s: s == [], what="unsubscribed", within=20
        )


def _requests(fake: FakeSubscriptions, method: str) -> int:
    with fake.lock:
        return sum(1 for made, _ in fake.requests if made == method)
