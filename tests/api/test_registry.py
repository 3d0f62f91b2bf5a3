from __future__ import annotations

import httpx


async def test_registries_list_the_built_in_actions_and_credential_types(
    api_client: httpx.AsyncClient,
) -> None:
    actions = (await api_client.get("/api/v1/registry/actions")).json()["items"]
    keys = {action["action_key"] for action in actions}
    assert {"task_management", "email", "sms", "http_request", "set_variables", "transform"} <= keys
    email = next(a for a in actions if a["action_key"] == "email")
    assert email["credential_type"] == "smtp"
    assert email["cfg_schema"]["required"] == ["credential", "to", "subject"]
    types = (await api_client.get("/api/v1/registry/credential-types")).json()["items"]
    assert {t["type_key"] for t in types} == {
        "smtp",
        "api_key",
        "basic_auth",
        "oauth2_client_credentials",
    }


async def test_event_sources_can_be_registered_and_deleted(api_client: httpx.AsyncClient) -> None:
    created = await api_client.post(
        "/api/v1/registry/triggers", json={"trigger_key": "lead-intake", "type": "event"}
    )
    assert created.status_code == 201
    again = await api_client.post(
        "/api/v1/registry/triggers", json={"trigger_key": "lead-intake", "type": "event"}
    )
    assert again.status_code == 409
    listed = (await api_client.get("/api/v1/registry/triggers")).json()["items"]
    assert {t["trigger_key"] for t in listed} == {"lead-intake", "manual"}
    assert (await api_client.delete("/api/v1/registry/triggers/lead-intake")).status_code == 204
    assert (await api_client.delete("/api/v1/registry/triggers/lead-intake")).status_code == 404
    assert (await api_client.delete("/api/v1/registry/triggers/manual")).status_code == 409


async def test_a_source_in_use_by_a_subscription_cannot_be_deleted(
    api_client: httpx.AsyncClient,
) -> None:
    await api_client.post(
        "/api/v1/registry/triggers", json={"trigger_key": "orders", "type": "event"}
    )
    workflow = (await api_client.post("/api/v1/workflows", json={"name": "w"})).json()
    subscription = await api_client.post(
        f"/api/v1/workflows/{workflow['id']}/subscriptions",
        json={"trigger_key": "orders", "filter_conditions": {"expression": "trigger.total > 10"}},
    )
    assert subscription.status_code == 201
    refused = await api_client.delete("/api/v1/registry/triggers/orders")
    assert refused.status_code == 409
    assert workflow["id"] in refused.json()["detail"]


async def test_bodies_over_the_payload_limit_answer_413_naming_the_limit_and_setting(
    api_client: httpx.AsyncClient,
) -> None:
    huge = {"name": "x", "description": "y" * 1_100_000}
    response = await api_client.post("/api/v1/workflows", json=huge)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == (
        "the body is larger than 1048576 bytes (1 MiB), the limit set by "
        "MAX_PAYLOAD_BYTES=1048576; send a smaller body or raise MAX_PAYLOAD_BYTES"
    )


async def test_subscription_filters_and_trigger_keys_are_validated(
    api_client: httpx.AsyncClient,
) -> None:
    workflow = (await api_client.post("/api/v1/workflows", json={"name": "w"})).json()
    url = f"/api/v1/workflows/{workflow['id']}/subscriptions"
    bad = await api_client.post(
        url, json={"trigger_key": "t", "filter_conditions": {"expression": "x >"}}
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "filter_conditions"
    unknown = await api_client.post(url, json={"trigger_key": "t"})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "trigger_key"
    assert (
        'POST /api/v1/registry/triggers {"trigger_key": "t", "type": "event"}'
        in (unknown.json()["errors"][0]["message"])
    )
    await api_client.post("/api/v1/registry/triggers", json={"trigger_key": "t", "type": "event"})
    good = await api_client.post(url, json={"trigger_key": "t"})
    listed = (await api_client.get(url)).json()["items"]
    assert [s["id"] for s in listed] == [good.json()["id"]]
    assert (await api_client.delete(f"{url}/{good.json()['id']}")).status_code == 204
    assert (await api_client.get(url)).json()["items"] == []
