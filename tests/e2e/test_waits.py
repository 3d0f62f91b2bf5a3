"""`wait_for_event` end to end through a real worker: resumed by an event (arriving after the
wait began, or before it), by its timeout (its `timeout` branch, or a failure without one), by
the API, and by a signed single-use link from an email (the approval flow)."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar import Litestar

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.hook_senders import create_webhook
from tests.support.invariants import assert_invariants
from tests.support.peers import SmtpPeer
from tests.support.workflows import import_published, run, steps_by_key, wait_for

PUBLIC_URL = "http://switchyard.test"  # the base URL of `engine_client`: its links are ours


@pytest.fixture
def engine_settings(settings_for: Callable[..., Settings]) -> Settings:
    """`engine_client`'s app with PUBLIC_URL, so templates can make resume links."""
    return settings_for(
        roles=frozenset({Role.API, Role.WORKER}),
        job_poll_interval_seconds=0.2,
        http_allowed_hosts=("127.0.0.1",),
        public_url=PUBLIC_URL,
    )


@pytest.fixture
def app(engine_settings: Settings) -> Litestar:
    return create_app(engine_settings)


@pytest.fixture
async def engine_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app, token=API_TOKEN) as client:
        yield client


@pytest.fixture
async def hooks(
    app: Litestar, engine_client: httpx.AsyncClient
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same running app without the API token, as a person's browser."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
        yield client


def wait_step(
    key: str = "approval", correlation_key: str = "{{ trigger.order_id }}", **cfg: Any
) -> dict[str, Any]:
    return {
        "key": key,
        "kind": "wait_for_event",
        "cfg": {"trigger_key": "approvals", "correlation_key": correlation_key, **cfg},
    }


def record(key: str, **values: Any) -> dict[str, Any]:
    return {"key": key, "kind": "action", "action_key": "set_variables", "cfg": {"values": values}}


def chain(
    name: str, *steps: dict[str, Any], edges: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """A workflow of `steps`, one after another unless `edges` are given."""
    if edges is None:
        edges = [{"from": a["key"], "to": b["key"]} for a, b in itertools.pairwise(steps)]
    return {"name": name, "steps": list(steps), "edges": edges}


async def register_event_source(client: httpx.AsyncClient, trigger_key: str = "approvals") -> None:
    response = await client.post(
        "/api/v1/registry/triggers", json={"trigger_key": trigger_key, "type": "event"}
    )
    assert response.status_code == 201, response.text


async def send(
    client: httpx.AsyncClient, payload: Any, correlation_key: str, trigger_key: str = "approvals"
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/events",
        json={"trigger_key": trigger_key, "payload": payload, "correlation_key": correlation_key},
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def queued_timeouts(client: httpx.AsyncClient) -> float:
    """The `wait_timeout` jobs queued now, from the queue depth /metrics reports."""
    scraped = (await client.get("/metrics")).text
    found = re.search(r'switchyard_queue_jobs\{kind="wait_timeout",state="queued"\} (\S+)', scraped)
    return float(found[1]) if found else 0.0


async def test_an_event_arriving_during_the_wait_resumes_it_with_its_payload(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await register_event_source(engine_client)
    workflow_id = await import_published(
        engine_client,
        chain(
            "Wait for approval",
            wait_step(timeout_seconds=3600),
            record("after", decision="{{ steps.approval.output.decision }}"),
        ),
    )
    execution_id = await run(engine_client, workflow_id, {"order_id": 42})
    waiting = await wait_for(engine_client, execution_id, {"WAITING"})
    approval = steps_by_key(waiting)["approval"]
    assert approval["status"] == "WAITING"
    assert approval["result_data"]["waiting_for"] == {
        "trigger_key": "approvals",
        "correlation_key": "42",
    }
    assert await queued_timeouts(engine_client) == 1
    await assert_invariants(engine_settings)  # a wait is a reason to have no step job
    other = await send(engine_client, {"decision": "no"}, correlation_key="43")
    assert other["resumed_execution_ids"] == []
    sent = await send(engine_client, {"decision": "yes"}, correlation_key="42")
    assert sent["resumed_execution_ids"] == [execution_id]
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS", done
    steps = steps_by_key(done)
    assert steps["approval"]["result_data"] == {"decision": "yes"}
    assert steps["approval"]["input_data"]["correlation_key"] == "42"
    assert steps["after"]["result_data"] == {"decision": "yes"}
    assert await queued_timeouts(engine_client) == 0  # withdrawn once the wait went on
    event = (await engine_client.get(f"/api/v1/events/{sent['event_id']}")).json()
    assert event["correlation_key"] == "42"
    assert execution_id in event["outcome_detail"]
    again = await send(engine_client, {"decision": "late"}, correlation_key="42")
    assert again["resumed_execution_ids"] == []
    await assert_invariants(engine_settings)


async def test_an_event_that_arrived_before_the_wait_began_counts(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    """The execution first waits at a gate (another key), so the awaited event certainly
    arrives before the second wait begins."""
    await register_event_source(engine_client)
    workflow_id = await import_published(
        engine_client,
        chain(
            "Gate, then wait",
            wait_step("gate", correlation_key="gate-{{ trigger.order_id }}"),
            wait_step("approval"),
            record("after", decision="{{ steps.approval.output.decision }}"),
        ),
    )
    execution_id = await run(engine_client, workflow_id, {"order_id": "A-7"})
    await wait_for(engine_client, execution_id, {"WAITING"})
    early = await send(engine_client, {"decision": "early"}, correlation_key="A-7")
    assert early["resumed_execution_ids"] == []  # nothing waits for it yet
    opened = await send(engine_client, {}, correlation_key="gate-A-7")
    assert opened["resumed_execution_ids"] == [execution_id]
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS", done
    assert steps_by_key(done)["after"]["result_data"] == {"decision": "early"}
    await assert_invariants(engine_settings)


async def test_an_event_sent_before_the_execution_started_does_not_count(
    engine_client: httpx.AsyncClient,
) -> None:
    await register_event_source(engine_client)
    await send(engine_client, {"decision": "stale"}, correlation_key="B-1")
    workflow_id = await import_published(engine_client, chain("Wait", wait_step()))
    execution_id = await run(engine_client, workflow_id, {"order_id": "B-1"})
    waiting = await wait_for(engine_client, execution_id, {"WAITING"})
    assert steps_by_key(waiting)["approval"]["status"] == "WAITING"
    await send(engine_client, {"decision": "fresh"}, correlation_key="B-1")
    done = await wait_for(engine_client, execution_id)
    assert steps_by_key(done)["approval"]["result_data"] == {"decision": "fresh"}


async def test_a_timeout_takes_the_timeout_branch(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await register_event_source(engine_client)
    document = chain(
        "Wait or give up",
        wait_step(timeout_seconds=0.5),
        record("approved", decision="{{ steps.approval.output.decision }}"),
        record("gave_up", reason="no answer"),
        edges=[
            {"from": "approval", "to": "approved"},
            {"from": "approval", "to": "gave_up", "branch_key": "timeout"},
        ],
    )
    workflow_id = await import_published(engine_client, document)
    done = await wait_for(engine_client, await run(engine_client, workflow_id, {"order_id": 1}))
    assert done["status"] == "SUCCESS", done
    steps = steps_by_key(done)
    assert steps["approval"]["result_data"] == {
        "timed_out": True,
        "waiting_for": {"trigger_key": "approvals", "correlation_key": "1"},
    }
    assert steps["approved"]["status"] == "SKIPPED"
    assert steps["gave_up"]["result_data"] == {"reason": "no answer"}
    await assert_invariants(engine_settings)


async def test_a_timeout_without_a_timeout_edge_fails_the_step(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await register_event_source(engine_client)
    workflow_id = await import_published(
        engine_client, chain("Wait or fail", wait_step(timeout_seconds=0.3), record("after"))
    )
    done = await wait_for(engine_client, await run(engine_client, workflow_id, {"order_id": 9}))
    assert done["status"] == "FAILED", done
    approval = steps_by_key(done)["approval"]
    assert approval["status"] == "FAILED"
    assert "timed out after 0.3 s waiting for an event of 'approvals'" in approval["error"]
    assert "correlation key '9'" in approval["error"]
    await assert_invariants(engine_settings)


async def test_the_api_resumes_a_waiting_step_once(
    engine_client: httpx.AsyncClient, engine_settings: Settings
) -> None:
    await register_event_source(engine_client)
    workflow_id = await import_published(
        engine_client, chain("Wait for the API", wait_step(), record("after", n=1))
    )
    execution_id = await run(engine_client, workflow_id, {"order_id": 5})
    await wait_for(engine_client, execution_id, {"WAITING"})
    base = f"/api/v1/executions/{execution_id}/steps"

    not_a_wait = await engine_client.post(f"{base}/after/resume", json={"payload": {}})
    assert not_a_wait.status_code == 409, not_a_wait.text
    assert "is of kind action" in not_a_wait.json()["detail"]
    unknown_step = await engine_client.post(f"{base}/nope/resume", json={"payload": {}})
    assert unknown_step.status_code == 404, unknown_step.text
    assert "no step 'nope'" in unknown_step.json()["detail"]
    unknown_execution = await engine_client.post(
        "/api/v1/executions/00000000-0000-0000-0000-000000000001/steps/approval/resume", json={}
    )
    assert unknown_execution.status_code == 404, unknown_execution.text

    resumed = await engine_client.post(
        f"{base}/approval/resume", json={"payload": {"decision": "by hand"}}
    )
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["id"] == execution_id
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS", done
    assert steps_by_key(done)["approval"]["result_data"] == {"decision": "by hand"}
    again = await engine_client.post(f"{base}/approval/resume", json={"payload": {}})
    assert again.status_code == 409, again.text
    assert again.json()["detail"].startswith(f"execution {execution_id} is SUCCESS")
    await assert_invariants(engine_settings)


def approval_flow() -> dict[str, Any]:
    """Email with approve and reject links -> wait -> condition on the decision."""
    links = (
        "Approve: {{ resume_url('approval') }}?decision=approve\n"
        "Reject: {{ resume_url('approval') }}?decision=reject\n"
    )
    return {
        "name": "Approve order",
        "steps": [
            {
                "key": "ask",
                "kind": "action",
                "action_key": "email",
                "cfg": {
                    "credential": "mail",
                    "to": "boss@example.com",
                    "subject": "Order {{ trigger.order_id }} needs your approval",
                    "text": links,
                },
            },
            wait_step(timeout_seconds=86400),
            {
                "key": "decide",
                "kind": "condition",
                "cfg": {"expression": "steps.approval.output.decision == 'approve'"},
            },
            record("approved", order="{{ trigger.order_id }}"),
            record("rejected", order="{{ trigger.order_id }}"),
            record("expired", order="{{ trigger.order_id }}"),
        ],
        "edges": [
            {"from": "ask", "to": "approval"},
            {"from": "approval", "to": "decide"},
            {"from": "approval", "to": "expired", "branch_key": "timeout"},
            {"from": "decide", "to": "approved", "branch_key": "true"},
            {"from": "decide", "to": "rejected", "branch_key": "false"},
        ],
    }


async def test_an_approval_through_the_emailed_link_takes_the_approve_branch_once(
    engine_client: httpx.AsyncClient,
    hooks: httpx.AsyncClient,
    engine_settings: Settings,
    smtp_server: SmtpPeer,
) -> None:
    await register_event_source(engine_client)
    credential = await engine_client.post(
        "/api/v1/credentials",
        json={
            "name": "mail",
            "type": "smtp",
            "data": {"host": smtp_server.host, "port": smtp_server.port, "security": "none"},
        },
    )
    assert credential.status_code == 201, credential.text
    workflow_id = await import_published(engine_client, approval_flow())
    execution_id = await run(engine_client, workflow_id, {"order_id": "O-17"})
    await wait_for(engine_client, execution_id, {"WAITING"})

    [mail] = smtp_server.mailbox.mails
    text = mail.message.get_content()
    links = dict(re.findall(r"(Approve|Reject): (\S+)", text))
    approve, reject = urlsplit(links["Approve"]), urlsplit(links["Reject"])
    assert f"{approve.scheme}://{approve.netloc}" == PUBLIC_URL
    assert approve.path.startswith("/hooks/resume/")
    assert approve.path == reject.path  # one token; the query is the answer
    approve_link = f"{approve.path}?{approve.query}"
    reject_link = f"{reject.path}?{reject.query}"

    page = await hooks.get(approve_link)  # what a mail scanner does: it changes nothing
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in page.text
    assert "<b>decision</b>: approve" in page.text
    still = await wait_for(engine_client, execution_id, {"WAITING"})
    assert steps_by_key(still)["approval"]["status"] == "WAITING"

    answered = await hooks.post(approve_link)
    assert answered.status_code == 202, answered.text
    assert answered.json() == {
        "execution_id": execution_id,
        "step_key": "approval",
        "resumed": True,
    }
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS", done
    steps = steps_by_key(done)
    assert steps["approval"]["result_data"] == {"decision": "approve"}
    assert steps["approved"]["result_data"] == {"order": "O-17"}
    assert (steps["rejected"]["status"], steps["expired"]["status"]) == ("SKIPPED", "SKIPPED")

    for used in (approve_link, reject_link):
        gone = await hooks.post(used)
        assert gone.status_code == 410, gone.text
        assert gone.headers["content-type"].startswith("application/problem+json")
        assert "used already" in gone.json()["detail"]
    gone_page = await hooks.get(approve_link, headers={"Accept": "text/html"})  # a browser
    assert gone_page.status_code == 410
    assert gone_page.headers["content-type"].startswith("text/html")
    assert "used already" in gone_page.text
    forged = approve.path[:-3] + ("AAA" if not approve.path.endswith("AAA") else "BBB")
    assert (await hooks.post(forged)).status_code == 410
    await assert_invariants(engine_settings)


async def test_a_browser_form_post_gets_a_page(
    engine_client: httpx.AsyncClient, hooks: httpx.AsyncClient
) -> None:
    await register_event_source(engine_client)
    document = chain(
        "Link in a variable",
        record("link", url="{{ resume_url('approval') }}"),
        wait_step(),
    )
    workflow_id = await import_published(engine_client, document)
    execution_id = await run(engine_client, workflow_id, {"order_id": 3})
    waiting = await wait_for(engine_client, execution_id, {"WAITING"})
    link = urlsplit(steps_by_key(waiting)["link"]["result_data"]["url"])
    answered = await hooks.post(
        f"{link.path}?decision=approve",
        data={"note": "fine by me", "decision": "approve with care"},
        headers={"Accept": "text/html"},
    )
    assert answered.status_code == 202, answered.text
    assert "your answer was recorded" in answered.text
    assert "frame-ancestors 'none'" in answered.headers["content-security-policy"]
    done = await wait_for(engine_client, execution_id)
    assert steps_by_key(done)["approval"]["result_data"] == {
        "decision": "approve with care",
        "note": "fine by me",
    }
    again = await hooks.post(link.path, headers={"Accept": "text/html"})
    assert again.status_code == 410
    assert "used already" in again.text


async def test_publishing_refuses_a_resume_url_naming_no_wait_step(
    engine_client: httpx.AsyncClient,
) -> None:
    document = chain(
        "Bad link",
        record("link", url="{{ resume_url('aproval') }}", other="{{ resume_url('link') }}"),
        wait_step(),
    )
    response = await engine_client.post(
        "/api/v1/workflows/import", params={"publish": "true"}, json=document
    )
    assert response.status_code == 422, response.text
    messages = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert "'aproval' is not a step of this workflow" in messages["steps[link].cfg.values.url"]
    assert "names a wait_for_event step: approval" in messages["steps[link].cfg.values.url"]
    assert "'link' is of kind action" in messages["steps[link].cfg.values.other"]


async def test_a_resume_url_without_public_url_fails_the_step_saying_so(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for(roles=frozenset({Role.API, Role.WORKER}), job_poll_interval_seconds=0.2)
    async with serving(create_app(settings), token=API_TOKEN) as client:
        await register_event_source(client)
        document = chain(
            "No public URL", record("link", url="{{ resume_url('approval') }}"), wait_step()
        )
        workflow_id = await import_published(client, document)
        done = await wait_for(client, await run(client, workflow_id, {"order_id": 1}))
        assert done["status"] == "FAILED", done
        error = steps_by_key(done)["link"]["error"]
        assert "resume_url('approval'): PUBLIC_URL is not set" in error


async def test_webhook_paths_under_resume_are_refused(engine_client: httpx.AsyncClient) -> None:
    """/hooks/resume/ holds resume links: no webhook endpoint may shadow them."""
    response = await engine_client.post(
        "/api/v1/webhooks",
        json={"trigger_key": "orders", "path": "resume/x", "auth": {"type": "none"}},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "path"


async def test_a_webhook_delivery_with_a_correlation_key_resumes_the_wait(
    engine_client: httpx.AsyncClient, hooks: httpx.AsyncClient, engine_settings: Settings
) -> None:
    refused = await engine_client.post(
        "/api/v1/webhooks",
        json={"trigger_key": "approvals", "path": "bad", "auth": {"type": "none"},
              "correlation_key": "{{ steps.x.output }}"},
    )  # fmt: skip
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "correlation_key"
    endpoint = await create_webhook(
        engine_client, path="payments", trigger_key="approvals",
        correlation_key="{{ trigger.data.order }}",
    )  # fmt: skip
    assert endpoint["correlation_key"] == "{{ trigger.data.order }}"
    workflow_id = await import_published(
        engine_client,
        chain(
            "Wait for payment",
            wait_step(),
            record("after", paid="{{ steps.approval.output.paid }}"),
        ),
    )
    execution_id = await run(engine_client, workflow_id, {"order_id": "A-7"})
    await wait_for(engine_client, execution_id, {"WAITING"})
    other = await hooks.post("/hooks/payments", json={"data": {"order": "B-1"}, "paid": False})
    assert other.status_code == 202, other.text
    unkeyed = await hooks.post("/hooks/payments", json={"no": "order"})
    assert unkeyed.status_code == 202  # accepted all the same; the event says why it has no key
    event = (await engine_client.get(f"/api/v1/events/{unkeyed.json()['event_id']}")).json()
    assert "correlation_key" in event["source"]["correlation_error"]
    paid = await hooks.post("/hooks/payments", json={"data": {"order": "A-7"}, "paid": True})
    assert paid.status_code == 202, paid.text
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS", done
    assert steps_by_key(done)["after"]["result_data"] == {"paid": True}
    # A change keeps the key unless it says otherwise; null removes it.
    changed = await engine_client.patch(
        f"/api/v1/webhooks/{endpoint['id']}", json={"auth": {"type": "none"}}
    )
    assert changed.json()["correlation_key"] == "{{ trigger.data.order }}"
    removed = await engine_client.patch(
        f"/api/v1/webhooks/{endpoint['id']}", json={"correlation_key": None}
    )
    assert removed.json()["correlation_key"] is None
    await assert_invariants(engine_settings)
