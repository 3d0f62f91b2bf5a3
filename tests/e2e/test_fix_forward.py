"""A user's second hour: mistakes caught at publish, a broken workflow fixed forward, its event
replayed, and every attempt of a step kept. Through the API, with a worker and real peers."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import httpx

from tests.support.peers import HttpPeer, RecordedRequest, Reply
from tests.support.workflows import import_published, run, steps_by_key, wait_for

QUICK_RETRY = {"max_attempts": 3, "backoff_seconds": 0.05}


def _notify_document(peer: HttpPeer, notify_path: str) -> dict[str, Any]:
    """Create a record, then notify about it: the second call is where a typo breaks it."""
    return {
        "name": "New lead",
        "variables": [{"key": "owner", "value": "ops@example.com"}],
        "steps": [
            {
                "key": "create",
                "kind": "action",
                "action_key": "http_request",
                "cfg": {"method": "POST", "url": f"{peer.base_url}/records", "json": {}},
            },
            {
                "key": "notify",
                "kind": "action",
                "action_key": "http_request",
                "cfg": {
                    "method": "POST",
                    "url": f"{peer.base_url}{notify_path}",
                    "json": {
                        "record": "{{ steps.create.output.body.id }}",
                        "to": "{{ vars.owner }}",
                        "lead": "{{ trigger.name }}",
                    },
                },
            },
        ],
        "edges": [{"from": "create", "to": "notify"}],
        "subscriptions": [{"trigger_key": "lead-created", "filter_conditions": {}}],
    }


async def _register(client: httpx.AsyncClient, trigger_key: str) -> None:
    response = await client.post(
        "/api/v1/registry/triggers", json={"trigger_key": trigger_key, "type": "event"}
    )
    assert response.status_code == 201, response.text


async def test_publish_refuses_what_would_certainly_fail_and_names_the_fix(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    broken = _notify_document(http_peer, "/notify")
    notify = broken["steps"][1]["cfg"]
    notify["json"]["record"] = "{{ steps.notfy.output.id }}"  # a typo'd step key
    notify["json"]["to"] = "{{ vars.ownr }}"  # no such variable
    broken["steps"][0]["cfg"]["json"] = {"after": "{{ steps.notify.output.status }}"}  # later
    broken["steps"].append(
        {
            "key": "internal",
            "kind": "action",
            "action_key": "http_request",
            "cfg": {"url": "http://10.1.2.3/admin"},
        }
    )
    broken["steps"].append(
        {"key": "check", "kind": "condition", "cfg": {"expression": "vars.limit > 3"}}
    )
    broken["edges"] += [
        {"from": "notify", "to": "internal"},
        {"from": "internal", "to": "check"},
    ]

    response = await engine_client.post(
        "/api/v1/workflows/import", params={"publish": "true"}, json=broken
    )

    assert response.status_code == 422, response.text
    errors = {(e["field"], e["message"]) for e in response.json()["errors"]}
    fields = sorted(field for field, _ in errors)
    assert fields == [
        "steps[check].cfg.expression",
        "steps[create].cfg.json.after",
        "steps[internal].cfg.url",
        "steps[notify].cfg.json.record",
        "steps[notify].cfg.json.to",
        "subscriptions[0].trigger_key",
    ]
    messages = dict(errors)
    assert (
        "steps.notfy is not a step of this workflow; steps: create, notify"
        in (messages["steps[notify].cfg.json.record"])
    )
    assert "cannot have run before step 'create'" in messages["steps[create].cfg.json.after"]
    assert (
        "vars.ownr is not a variable of this workflow; variables: owner"
        in (messages["steps[notify].cfg.json.to"])
    )
    assert "vars.limit" in messages["steps[check].cfg.expression"]
    assert "10.1.2.3 is a private address" in messages["steps[internal].cfg.url"]
    assert "HTTP_ALLOWED_HOSTS" in messages["steps[internal].cfg.url"]
    assert (
        'POST /api/v1/registry/triggers {"trigger_key": "lead-created", "type": "event"}'
        in (messages["subscriptions[0].trigger_key"])
    )
    listed = (await engine_client.get("/api/v1/workflows")).json()["items"]
    assert listed == []  # nothing was created

    # The passing document: the same workflow, fixed, publishes and runs.
    await _register(engine_client, "lead-created")
    http_peer.reply("/records", 201, json={"id": "r-1"})
    http_peer.reply("/notify", 200, json={"ok": True})
    workflow_id = await import_published(engine_client, _notify_document(http_peer, "/notify"))
    execution = await wait_for(engine_client, await run(engine_client, workflow_id, {"name": "A"}))
    assert execution["status"] == "SUCCESS", execution
    assert http_peer.requests_to("/notify")[0].json() == {
        "record": "r-1",
        "to": "ops@example.com",
        "lead": "A",
    }


async def test_a_draft_is_validated_against_the_workflows_variables(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    await _register(engine_client, "lead-created")
    workflow_id = await import_published(engine_client, _notify_document(http_peer, "/notify"))
    draft = (await engine_client.post(f"/api/v1/workflows/{workflow_id}/versions")).json()
    steps = {step["key"]: step for step in draft["steps"]}
    cfg = copy.deepcopy(steps["notify"]["cfg"])
    cfg["json"]["to"] = "{{ vars.team }}"
    path = f"/api/v1/workflows/{workflow_id}/versions/{draft['version_num']}"
    changed = await engine_client.patch(f"{path}/steps/{steps['notify']['id']}", json={"cfg": cfg})
    assert changed.status_code == 200, changed.text

    report = (await engine_client.get(f"{path}/validation")).json()
    assert report["valid"] is False
    assert report["errors"] == [
        {
            "field": "steps[notify].cfg.json.to",
            "message": "vars.team is not a variable of this workflow; variables: owner",
        }
    ]
    added = await engine_client.post(
        f"/api/v1/workflows/{workflow_id}/variables", json={"key": "team", "value": "sales"}
    )
    assert added.status_code in (200, 201), added.text
    assert (await engine_client.get(f"{path}/validation")).json() == {"valid": True, "errors": []}


async def test_a_broken_run_is_fixed_forward_retried_on_the_latest_version_and_replayed(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    await _register(engine_client, "lead-created")
    http_peer.reply("/records", 201, json={"id": "r-7"})
    http_peer.reply("/notify", 200, json={"ok": True})
    workflow_id = await import_published(engine_client, _notify_document(http_peer, "/notfy"))
    sent = await engine_client.post(
        "/api/v1/events", json={"trigger_key": "lead-created", "payload": {"name": "Ada"}}
    )
    assert sent.status_code == 202, sent.text
    event_id = sent.json()["event_id"]
    [execution_id] = sent.json()["execution_ids"]
    failed = await wait_for(engine_client, execution_id)
    assert failed["status"] == "FAILED"
    assert steps_by_key(failed)["notify"]["error"] is not None

    # Fix forward: the corrected document becomes version 2 of the same workflow.
    fixed = await engine_client.put(
        f"/api/v1/workflows/{workflow_id}/document",
        params={"publish": "true"},
        json=_notify_document(http_peer, "/notify"),
    )
    assert fixed.status_code == 201, fixed.text
    assert fixed.json() == {"id": workflow_id, "version_num": 2, "published": True}
    assert len((await engine_client.get("/api/v1/workflows")).json()["items"]) == 1

    retried = await engine_client.post(
        f"/api/v1/executions/{execution_id}/retry", params={"version": "latest"}
    )
    assert retried.status_code == 202, retried.text
    done = await wait_for(engine_client, execution_id)
    assert done["status"] == "SUCCESS", done
    assert done["version_id"] != failed["version_id"]
    steps = steps_by_key(done)
    assert len(http_peer.requests_to("/records")) == 1  # the step that succeeded kept its result
    assert http_peer.requests_to("/notify")[0].json()["record"] == "r-7"
    history = steps["notify"]["attempts_history"]
    assert [a["status"] for a in history] == ["FAILED", "SUCCESS"]  # the earlier run's attempt too

    # The event is listed with its outcome and execution, and replays onto version 2.
    listed = await engine_client.get("/api/v1/events", params={"trigger_key": "lead-created"})
    assert listed.status_code == 200, listed.text
    [event] = listed.json()["items"]
    assert (event["id"], event["outcome"], event["execution_ids"]) == (
        event_id,
        "accepted",
        [execution_id],
    )
    replay = await engine_client.post(f"/api/v1/events/{event_id}/replay")
    assert replay.status_code == 202, replay.text
    assert replay.json()["event_id"] != event_id
    [replayed_execution] = replay.json()["execution_ids"]
    again = await wait_for(engine_client, replayed_execution)
    assert again["status"] == "SUCCESS", again
    assert len(http_peer.requests_to("/records")) == 2
    assert http_peer.requests_to("/notify")[-1].json()["lead"] == "Ada"
    shown = (await engine_client.get(f"/api/v1/events/{replay.json()['event_id']}")).json()
    assert shown["source"] == {"via": "replay", "replay_of": event_id}
    assert shown["payload"] == {"name": "Ada"}
    assert shown["execution_ids"] == [replayed_execution]


async def test_events_are_listed_newest_first_in_keyset_pages_with_their_outcome(
    engine_client: httpx.AsyncClient,
) -> None:
    await _register(engine_client, "pings")
    before = dt.datetime.now(dt.UTC)
    ids = []
    for number in range(3):
        sent = await engine_client.post(
            "/api/v1/events", json={"trigger_key": "pings", "payload": {"n": number}}
        )
        ids.append(sent.json()["event_id"])
    first = (await engine_client.get("/api/v1/events", params={"limit": 2})).json()
    second = (
        await engine_client.get(
            "/api/v1/events", params={"limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [e["id"] for e in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None
    assert first["items"][0]["outcome"] == "no_match"
    assert first["items"][0]["outcome_detail"] == "no active subscription to 'pings'"
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert (await engine_client.get("/api/v1/events", params={"since": later.isoformat()})).json()[
        "items"
    ] == []
    since = (
        await engine_client.get("/api/v1/events", params={"since": before.isoformat()})
    ).json()["items"]
    assert len(since) == 3
    missing = await engine_client.get(f"/api/v1/events/{'0' * 8}-0000-0000-0000-{'0' * 12}")
    assert missing.status_code == 404


async def test_every_attempt_of_a_flaky_step_is_kept_with_its_error_and_duration(
    engine_client: httpx.AsyncClient, http_peer: HttpPeer
) -> None:
    calls: list[int] = []

    def flaky(_request: RecordedRequest) -> Reply:
        calls.append(1)
        if len(calls) < 3:
            return Reply(status=503, body=b"busy")
        return Reply(status=200, body=b"{}", headers={"Content-Type": "application/json"})

    http_peer.respond("/flaky", flaky)
    workflow_id = await import_published(
        engine_client,
        {
            "name": "Flaky",
            "steps": [
                {
                    "key": "call",
                    "kind": "action",
                    "action_key": "http_request",
                    "cfg": {"url": f"{http_peer.base_url}/flaky", "retry": QUICK_RETRY},
                }
            ],
        },
    )
    execution = await wait_for(engine_client, await run(engine_client, workflow_id))
    assert execution["status"] == "SUCCESS", execution
    step = steps_by_key(execution)["call"]
    assert step["attempts"] == 3
    assert "execution_time" not in step
    assert isinstance(step["duration_ms"], float)
    history = step["attempts_history"]
    assert [(a["attempt"], a["status"]) for a in history] == [
        (1, "FAILED"),
        (2, "FAILED"),
        (3, "SUCCESS"),
    ]
    assert all("503" in a["error"] for a in history[:2])
    assert history[2]["error"] is None
    for attempt in history:
        started = dt.datetime.fromisoformat(attempt["started_at"])
        finished = dt.datetime.fromisoformat(attempt["finished_at"])
        assert started <= finished
        assert attempt["duration_ms"] >= 0
    assert history[0]["finished_at"] <= history[1]["started_at"]
