"""The CLI's operator commands act as admin and append audit entries naming the OS user; a
token made with `tokens create --role` carries its role into the API."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import ENCRYPTION_KEY
from tests.support.processes import environment, run_command

DOCUMENT = {
    "name": "Imported from the command line",
    "steps": [{"key": "pause", "kind": "delay", "cfg": {"seconds": 1}}],
}


@pytest.mark.timeout(180)  # six CLI processes, each starting Python and connecting
async def test_cli_commands_that_change_state_are_audited_as_the_os_user(
    database_dsn: str,
    connection: asyncpg.Connection,
    settings_for: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    env = environment(DATABASE_URL=database_dsn, ENCRYPTION_KEYS=ENCRYPTION_KEY)
    viewer = run_command(["tokens", "create", "--name", "reader", "--role", "viewer"], env)
    assert viewer.returncode == 0, viewer.stderr
    assert "viewer" in viewer.stderr
    ingest = run_command(
        ["tokens", "create", "--name", "shop", "--role", "ingest", "--trigger-key", "orders"], env
    )
    assert ingest.returncode == 0, ingest.stderr
    listed = run_command(["tokens", "list"], env)
    assert listed.returncode == 0, listed.stderr
    assert "ROLE" in listed.stdout
    assert "viewer" in listed.stdout
    shop_id = await connection.fetchval("SELECT id FROM api_token WHERE name = 'shop'")
    revoked = run_command(["tokens", "revoke", str(shop_id)], env)
    assert revoked.returncode == 0, revoked.stderr
    source = tmp_path / "flow.json"
    source.write_text(json.dumps(DOCUMENT))
    imported = run_command(["import", str(source)], env)
    assert imported.returncode == 0, imported.stderr
    workflow_id = json.loads(imported.stdout)["id"]
    rotated = run_command(["rotate-keys"], env)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr

    rows = await connection.fetch(
        "SELECT token_id, token_name, role, action, target_type, target_id, summary::text AS"
        " summary, source FROM audit_log ORDER BY at, id"
    )
    assert [row["action"] for row in rows] == [
        "token.create", "token.create", "token.revoke", "workflow.import", "keys.rotate",
    ]  # fmt: skip
    for row in rows:
        assert row["token_id"] is None
        assert row["token_name"] == f"cli:{getpass.getuser()}"
        assert row["role"] == "admin"
        assert row["source"].startswith("cli@")
    tokens = {r["name"]: r["id"] for r in await connection.fetch("SELECT name, id FROM api_token")}
    assert rows[0]["target_id"] == str(tokens["reader"])
    assert rows[2]["target_id"] == str(shop_id)
    assert rows[3]["target_id"] == workflow_id
    assert json.loads(rows[1]["summary"])["arguments"]["trigger_keys"] == ["orders"]
    assert viewer.stdout.strip() not in str([row["summary"] for row in rows])
    assert json.loads(rows[3]["summary"])["command"] == "import"

    app = create_app(settings_for(roles=frozenset({Role.API}), api_tokens=()))
    async with serving(app, token=viewer.stdout.strip()) as client:
        assert (await client.get(f"/api/v1/workflows/{workflow_id}")).status_code == 200
        refused = await client.patch(f"/api/v1/workflows/{workflow_id}", json={"name": "x"})
        assert refused.status_code == 403
