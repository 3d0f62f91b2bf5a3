"""Three scheduler processes keep one GitHub hook; the one creating it is SIGKILLed while the
(slow) fake GitHub is still answering: exactly one hook exists, made by exactly one create, and
it stays one over further checks."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from tests.faults.drill import Process
from tests.support.fake_senders import FakeGitHub
from tests.support.registration import (
    CHECK_SECONDS,
    StartProcess,
    api_client,
    create_github_credential,
    registration_when,
)
from tests.support.waiting import eventually

REPOSITORY = "acme/shop"
CREATE_DELAY_SECONDS = 3.0  # below REGISTRATION_CALL_TIMEOUT_SECONDS (5) of the processes


async def test_scheduler_killed_mid_create_leaves_exactly_one_hook(
    start_process: StartProcess,
    fake_github: FakeGitHub,
    database_dsn: str,
    connection: asyncpg.Connection,
) -> None:
    fake_github.create_delay_seconds = CREATE_DELAY_SECONDS
    api = start_process("api")
    schedulers = await asyncio.gather(
        *(asyncio.to_thread(start_process, "scheduler", public_url=api.url) for _ in range(3))
    )
    async with api_client(api) as client:
        await create_github_credential(client, fake_github)
        response = await client.post(
            "/api/v1/webhooks",
            json={"trigger_key": "shop-push", "path": "github/shop", "auth": {"type": "github"},
                  "registration": {"provider": "github", "credential": "github",
                                   "repository": REPOSITORY}},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        webhook = response.json()

        # The create is under way at the fake: kill the replica that holds the registration.
        await eventually(lambda: fake_github.creates_started, what="a create under way")
        claimed_by = await connection.fetchval(
            "SELECT claimed_by FROM webhook_registration WHERE endpoint_id = $1",
            uuid.UUID(webhook["id"]),
        )
        victim = _holder(schedulers, claimed_by)
        assert fake_github.creates_done == 0  # the kill lands mid-call
        victim.kill()

        status = await registration_when(
            client, webhook["id"], lambda s: s["state"] == "registered", within=30
        )
        hooks = fake_github.repository_hooks(REPOSITORY)
        assert len(hooks) == 1, hooks
        assert status["external_id"] == str(hooks[0]["id"])
        # The successor waited the dead replica's call out and adopted its hook.
        assert fake_github.creates_started == 1
        first_check = status["checked_at"]
        await registration_when(
            client,
            webhook["id"],
            lambda s: s["checked_at"] > first_check,
            within=float(CHECK_SECONDS) * 5,
        )
        assert len(fake_github.repository_hooks(REPOSITORY)) == 1
        survivors = [s for s in schedulers if s is not victim]
        for scheduler in survivors:
            assert scheduler.terminate(15) < 15


def _holder(schedulers: list[Process], claimed_by: str | None) -> Process:
    """The process named by a `claimed_by` of `host:pid:suffix`."""
    assert claimed_by is not None
    pid = int(claimed_by.split(":")[-2])
    [holder] = [s for s in schedulers if s.process.pid == pid]
    return holder
