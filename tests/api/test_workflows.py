from __future__ import annotations

import httpx


async def _create(client: httpx.AsyncClient, **fields: object) -> dict[str, object]:
    response = await client.post("/api/v1/workflows", json={"name": "Lead routing", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_create_read_update_and_delete_a_definition(api_client: httpx.AsyncClient) -> None:
    created = await _create(api_client, category="sales", tags=["leads"])
    url = f"/api/v1/workflows/{created['id']}"
    read = await api_client.get(url)
    assert read.json() == created
    etag = read.headers["etag"]

    changed = await api_client.patch(
        url, json={"description": "Routes leads"}, headers={"If-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.json()["description"] == "Routes leads"
    assert changed.json()["name"] == "Lead routing"
    assert changed.headers["etag"] != etag

    stale = await api_client.patch(url, json={"name": "Other"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert "GET it again" in stale.json()["detail"]

    assert (await api_client.delete(url)).status_code == 204
    missing = await api_client.get(url)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await api_client.delete(url)).status_code == 404


async def test_list_is_paginated_by_cursor_and_filterable(api_client: httpx.AsyncClient) -> None:
    ids = [
        (await _create(api_client, name=f"w{i}", category="a" if i % 2 else "b"))["id"]
        for i in range(5)
    ]
    seen: list[object] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api_client.get("/api/v1/workflows", params=params)).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    only_a = (await api_client.get("/api/v1/workflows", params={"category": "a"})).json()
    assert [item["name"] for item in only_a["items"]] == ["w1", "w3"]


async def test_tag_filter_matches_definitions_carrying_the_tag(
    api_client: httpx.AsyncClient,
) -> None:
    await _create(api_client, name="tagged", tags=["sales", "eu"])
    await _create(api_client, name="untagged")
    page = (await api_client.get("/api/v1/workflows", params={"tag": "eu"})).json()
    assert [item["name"] for item in page["items"]] == ["tagged"]


async def test_bad_bodies_are_problem_details_naming_the_field(
    api_client: httpx.AsyncClient,
) -> None:
    malformed = await api_client.post(
        "/api/v1/workflows", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == "application/problem+json"

    wrong_type = await api_client.post("/api/v1/workflows", json={"name": 42})
    assert wrong_type.status_code == 400
    assert wrong_type.json()["errors"][0]["field"] == "name"

    unknown = await api_client.post("/api/v1/workflows", json={"name": "x", "colour": "red"})
    assert unknown.status_code == 400
    assert "colour" in str(unknown.json())

    empty_name = await api_client.post("/api/v1/workflows", json={"name": ""})
    assert empty_name.status_code == 400

    nul = await api_client.post("/api/v1/workflows", json={"name": "a\u0000b"})
    assert nul.status_code == 400


async def test_unknown_ids_and_bad_ids_answer_404(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/api/v1/workflows/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]
    assert (await api_client.get("/api/v1/workflows/not-a-uuid")).status_code in (400, 404)
