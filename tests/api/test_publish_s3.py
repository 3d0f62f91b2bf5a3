"""Publishing against a real S3-compatible server (moto's server mode on loopback)."""

from __future__ import annotations

from collections.abc import Callable

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.processes import free_port
from tests.support.s3_server import create_bucket, s3_client

DOCUMENT = {
    "name": "S3 published",
    "steps": [
        {
            "key": "only",
            "kind": "action",
            "action_key": "set_variables",
            "cfg": {"values": {"a": 1}},
        }
    ],
}


async def test_publish_writes_the_document_under_the_bucket_prefix(
    settings_for: Callable[..., Settings],
    s3_server: str,
) -> None:
    bucket = await create_bucket(s3_server)
    settings = settings_for(
        roles=frozenset({Role.API}),
        object_store_url=f"s3://{bucket}/switchyard",
        s3_endpoint_url=s3_server,
    )
    async with serving(create_app(settings), token=API_TOKEN) as client:
        response = await client.post(
            "/api/v1/workflows/import", params={"publish": "true"}, json=DOCUMENT
        )
        assert response.status_code == 201, response.text
        workflow_id = response.json()["id"]
        version = (await client.get(f"/api/v1/workflows/{workflow_id}/versions/1")).json()
    assert version["s3_key"] == f"workflows/{workflow_id}/v1.json"
    async with s3_client(s3_server) as s3:
        stored = await s3.get_object(Bucket=bucket, Key=f"switchyard/{version['s3_key']}")
        assert b'"S3 published"' in await stored["Body"].read()


async def test_an_unreachable_store_answers_503_and_leaves_the_version_a_draft(
    settings_for: Callable[..., Settings],
    s3_server: str,
) -> None:
    settings = settings_for(
        roles=frozenset({Role.API}),
        object_store_url="s3://nowhere/prefix",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
    )
    async with serving(create_app(settings), token=API_TOKEN) as client:
        imported = await client.post(
            "/api/v1/workflows/import", params={"publish": "true"}, json=DOCUMENT
        )
        assert imported.status_code == 503
        assert imported.headers["retry-after"]
        assert (await client.get("/api/v1/workflows")).json()["items"] == []  # all or nothing

        draft = (await client.post("/api/v1/workflows/import", json=DOCUMENT)).json()
        url = f"/api/v1/workflows/{draft['id']}/versions/1"
        publish = await client.post(f"{url}/publish")
        assert publish.status_code == 503
        assert "retry" in publish.json()["detail"].lower() or publish.headers["retry-after"]
        version = (await client.get(url)).json()
        assert (version["status"], version["s3_key"]) == ("draft", None)
