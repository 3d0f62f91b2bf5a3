"""Tokens an administrator manages: listed without the secret, shown once, revocable, with an
optional expiry and a last-used time; a revoked token is refused at once by every replica."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.processes import environment, switchyard_run


async def test_a_created_token_is_shown_once_listed_without_secret_and_records_its_use(
    api_client: httpx.AsyncClient, database_dsn: str
) -> None:
    created = await api_client.post("/api/v1/tokens", json={"name": "ci deploys"})
    assert created.status_code == 201, created.text
    body = created.json()
    token, token_id = body["token"], body["id"]
    assert token.startswith("sy_")
    assert body["expires_at"] is None
    listed = (await api_client.get("/api/v1/tokens")).json()["items"]
    [entry] = [item for item in listed if item["id"] == token_id]
    assert entry["name"] == "ci deploys"
    assert entry["last_used_at"] is None
    assert token not in str(listed)
    assert "token" not in entry
    assert "token_hash" not in entry
    for _ in range(3):
        used = await api_client.get(
            "/api/v1/workflows", headers={"Authorization": f"Bearer {token}"}
        )
        assert used.status_code == 200
    listed = (await api_client.get("/api/v1/tokens")).json()["items"]
    [entry] = [item for item in listed if item["id"] == token_id]
    assert entry["last_used_at"] is not None
    connection = await asyncpg.connect(database_dsn)
    try:
        # Three requests within a minute wrote last_used_at once: the row has one version.
        writes = await connection.fetchval(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'api_token'"
        )
    finally:
        await connection.close()
    assert writes in (0, 1)  # statistics may lag; never one write per request


async def test_an_expired_token_is_refused(
    api_client: httpx.AsyncClient, database_dsn: str
) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    created = await api_client.post(
        "/api/v1/tokens", json={"name": "short-lived", "expires_at": soon.isoformat()}
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api_client.get("/api/v1/workflows", headers=headers)).status_code == 200
    connection = await asyncpg.connect(database_dsn)
    try:  # let the hour pass
        await connection.execute(
            "UPDATE api_token SET expires_at = now() - interval '1 second' WHERE id = $1",
            created.json()["id"],
        )
    finally:
        await connection.close()
    refused = await api_client.get("/api/v1/workflows", headers=headers)
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]
    past = await api_client.post(
        "/api/v1/tokens", json={"name": "late", "expires_at": "2020-01-01T00:00:00Z"}
    )
    assert past.status_code == 422
    naive = await api_client.post(
        "/api/v1/tokens", json={"name": "naive", "expires_at": "2099-01-01T00:00:00"}
    )
    assert naive.status_code == 400


async def test_revoking_an_unknown_token_is_404_and_the_list_pages(
    api_client: httpx.AsyncClient,
) -> None:
    missing = await api_client.delete("/api/v1/tokens/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    for n in range(3):
        await api_client.post("/api/v1/tokens", json={"name": f"t{n}"})
    first = (await api_client.get("/api/v1/tokens", params={"limit": 2})).json()
    second = (
        await api_client.get("/api/v1/tokens", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    names = [item["name"] for item in first["items"] + second["items"]]
    assert names == ["t2", "t1", "t0"]
    assert second["next_cursor"] is None


async def test_a_token_revoked_through_one_api_process_is_refused_by_another(
    database_dsn: str, tmp_path: Path
) -> None:
    env = environment(DATABASE_URL=database_dsn, API_TOKENS=API_TOKEN)
    with (
        switchyard_run(["--roles", "api"], env, tmp_path / "one") as one,
        switchyard_run(["--roles", "api"], env, tmp_path / "two") as two,
    ):
        await asyncio.to_thread(one.wait_ready)
        await asyncio.to_thread(two.wait_ready)
        admin = {"Authorization": f"Bearer {API_TOKEN}"}
        async with httpx.AsyncClient(timeout=5) as client:
            created = await client.post(
                f"{one.url}/api/v1/tokens", json={"name": "laptop"}, headers=admin
            )
            assert created.status_code == 201, created.text
            bearer = {"Authorization": f"Bearer {created.json()['token']}"}
            assert (
                await client.get(f"{two.url}/api/v1/workflows", headers=bearer)
            ).status_code == 200
            revoked = await client.delete(
                f"{one.url}/api/v1/tokens/{created.json()['id']}", headers=admin
            )
            assert revoked.status_code == 204
            # The very next request to the other process is refused: no cache to wait out.
            refused = await client.get(f"{two.url}/api/v1/workflows", headers=bearer)
            assert refused.status_code == 401
            assert (
                await client.get(f"{one.url}/api/v1/workflows", headers=bearer)
            ).status_code == 401
            listed = (await client.get(f"{two.url}/api/v1/tokens", headers=admin)).json()
            [entry] = [item for item in listed["items"] if item["name"] == "laptop"]
            assert entry["revoked_at"] is not None


async def test_a_revoked_local_token_is_replaced_at_the_next_start(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    from server.app import ensure_local_token

    app = create_app(settings_for(roles=frozenset({Role.API})))
    async with serving(app, token=API_TOKEN) as client:
        data_dir = tmp_path / "local"
        data_dir.mkdir()
        token = await ensure_local_token(data_dir)
        listed = (await client.get("/api/v1/tokens")).json()["items"]
        [entry] = [item for item in listed if item["name"] == "local (make run)"]
        assert (await client.delete(f"/api/v1/tokens/{entry['id']}")).status_code == 204
        replaced = await ensure_local_token(data_dir)
        assert replaced != token
        ok = await client.get("/api/v1/workflows", headers={"Authorization": f"Bearer {replaced}"})
        assert ok.status_code == 200
