"""`/api/v1/schedules`: CRUD, validation naming the field, re-planning, pagination, NOTIFY."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import httpx

from server.db.schedules import SCHEDULE_CHANNEL

URL = "/api/v1/schedules"


async def _create(client: httpx.AsyncClient, **fields: object) -> dict[str, Any]:
    body = {"trigger_key": "nightly", "cron": "0 3 * * *", **fields}
    response = await client.post(URL, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _instant(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def test_create_read_change_and_delete_a_schedule(api_client: httpx.AsyncClient) -> None:
    created = await _create(
        api_client, timezone="Europe/Berlin", payload={"report": "daily"}, misfire_policy="skip"
    )
    assert {k: created[k] for k in ("trigger_key", "cron", "timezone", "payload")} == {
        "trigger_key": "nightly",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "payload": {"report": "daily"},
    }
    assert (created["enabled"], created["misfire_policy"]) == (True, "skip")
    assert (created["last_fire_at"], created["last_error"]) == (None, None)
    planned = _instant(created["next_fire_at"])
    assert planned.astimezone(dt.UTC).hour in (1, 2)  # 03:00 in Berlin, CET or CEST
    assert planned > dt.datetime.now(dt.UTC)

    url = f"{URL}/{created['id']}"
    assert (await api_client.get(url)).json() == created

    disabled = (await api_client.patch(url, json={"enabled": False})).json()
    assert (disabled["enabled"], disabled["next_fire_at"]) == (False, None)
    enabled = (await api_client.patch(url, json={"enabled": True})).json()
    assert enabled["next_fire_at"] == created["next_fire_at"]
    recron = (await api_client.patch(url, json={"cron": "*/5 * * * * *"})).json()
    assert _instant(recron["next_fire_at"]) - dt.datetime.now(dt.UTC) < dt.timedelta(seconds=6)
    repayload = (await api_client.patch(url, json={"payload": {"report": "weekly"}})).json()
    assert repayload["payload"] == {"report": "weekly"}
    assert repayload["next_fire_at"] == recron["next_fire_at"]  # the timing did not change

    assert (await api_client.delete(url)).status_code == 204
    missing = await api_client.get(url)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await api_client.delete(url)).status_code == 404


async def test_invalid_cron_or_timezone_answers_422_naming_the_field_with_an_example(
    api_client: httpx.AsyncClient,
) -> None:
    bad_cron = await api_client.post(URL, json={"trigger_key": "k", "cron": "61 * * * *"})
    assert bad_cron.status_code == 422
    problem = bad_cron.json()
    assert problem["errors"][0]["field"] == "cron"
    assert "'*/5 * * * *'" in problem["errors"][0]["message"]
    assert problem["detail"].startswith("cron: ")

    bad_zone = await api_client.post(
        URL, json={"trigger_key": "k", "cron": "* * * * *", "timezone": "Mars/Base"}
    )
    assert bad_zone.status_code == 422
    assert bad_zone.json()["errors"][0]["field"] == "timezone"
    assert "Europe/Berlin" in bad_zone.json()["errors"][0]["message"]

    never = await api_client.post(URL, json={"trigger_key": "k", "cron": "0 0 30 2 *"})
    assert never.status_code == 422
    assert "never fires" in never.json()["detail"]

    created = await _create(api_client)
    url = f"{URL}/{created['id']}"
    refused = await api_client.patch(url, json={"cron": "0 9 * * mon-fry"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "cron"
    assert (await api_client.get(url)).json() == created  # unchanged


async def test_malformed_bodies_are_refused(api_client: httpx.AsyncClient) -> None:
    unknown = await api_client.post(URL, json={"trigger_key": "k", "cron": "@daily", "when": 1})
    assert unknown.status_code == 400
    policy = await api_client.post(
        URL, json={"trigger_key": "k", "cron": "@daily", "misfire_policy": "run_all"}
    )
    assert policy.status_code == 400
    assert "misfire_policy" in policy.text
    overlap = await api_client.post(
        URL, json={"trigger_key": "k", "cron": "@daily", "overlap": "sometimes"}
    )
    assert overlap.status_code == 400
    assert overlap.headers["content-type"] == "application/problem+json"
    assert overlap.json()["errors"][0]["field"] == "overlap"


async def test_a_schedule_keeps_its_overlap_policy(api_client: httpx.AsyncClient) -> None:
    default = await _create(api_client)
    assert default["overlap"] == "allow"
    buffered = await _create(api_client, overlap="buffer_one")
    assert buffered["overlap"] == "buffer_one"
    url = f"{URL}/{buffered['id']}"
    changed = (await api_client.patch(url, json={"overlap": "skip"})).json()
    assert changed["overlap"] == "skip"
    assert (await api_client.get(url)).json()["overlap"] == "skip"
    listed = (await api_client.get(URL)).json()["items"]
    assert {item["id"]: item["overlap"] for item in listed} == {
        default["id"]: "allow",
        buffered["id"]: "skip",
    }


async def test_the_trigger_key_is_registered_as_a_schedule_source(
    api_client: httpx.AsyncClient,
) -> None:
    await _create(api_client)
    await _create(api_client, cron="@hourly")  # a second schedule may share the key
    triggers = (await api_client.get("/api/v1/registry/triggers")).json()["items"]
    assert {t["trigger_key"]: t["type"] for t in triggers}["nightly"] == "schedule"

    event = await api_client.post(
        "/api/v1/registry/triggers", json={"trigger_key": "orders", "type": "event"}
    )
    assert event.status_code == 201
    taken = await api_client.post(URL, json={"trigger_key": "orders", "cron": "@daily"})
    assert taken.status_code == 409
    assert "'event'" in taken.json()["detail"]


async def test_list_is_paginated_by_cursor_and_filterable(api_client: httpx.AsyncClient) -> None:
    ids = [
        (await _create(api_client, trigger_key=f"k{i % 2}", enabled=i != 2))["id"] for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api_client.get(URL, params=params)).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    k1 = (await api_client.get(URL, params={"trigger_key": "k1"})).json()["items"]
    assert [item["id"] for item in k1] == [ids[1], ids[3]]
    off = (await api_client.get(URL, params={"enabled": "false"})).json()["items"]
    assert [item["id"] for item in off] == [ids[2]]
    assert (await api_client.get(URL, params={"cursor": "nonsense"})).status_code == 400


async def test_every_change_notifies_the_schedulers_with_the_schedule_id(
    api_client: httpx.AsyncClient, database_dsn: str
) -> None:
    heard: list[str] = []
    three = asyncio.Event()

    def note(*args: object) -> None:
        heard.append(str(args[3]))
        if len(heard) >= 3:
            three.set()

    listener = await asyncpg.connect(database_dsn)
    try:
        await listener.add_listener(SCHEDULE_CHANNEL, note)
        created = await _create(api_client)
        url = f"{URL}/{created['id']}"
        assert (await api_client.patch(url, json={"enabled": False})).status_code == 200
        assert (await api_client.patch(url, json={"cron": "nope"})).status_code == 422
        assert (await api_client.delete(url)).status_code == 204
        await asyncio.wait_for(three.wait(), 5)
    finally:
        await listener.close()
    assert heard == [created["id"]] * 3  # the refused change sent nothing
