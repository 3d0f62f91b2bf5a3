"""The operator commands as processes run from another directory: they use the running
instance's database (never a new one), say which, and fail clearly when there is none."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.crypto.aead import parse_encryption_keys
from tests.support.processes import ServerProcess, environment, run_command, switchyard_run
from tests.support.waiting import eventually_sync

DOCUMENT = {
    "name": "Shape a lead",
    "steps": [
        {
            "key": "shape",
            "kind": "action",
            "action_key": "transform",
            "cfg": {"output": {"name": "{{ trigger.lead.name }}"}, "retry": {"max_attempts": 1}},
        }
    ],
    "subscriptions": [{"trigger_key": "cli-leads", "filter_conditions": {}}],
}


def _ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    output: str = result.stdout
    return output


def _wait_finished(server: ServerProcess, token: str, execution_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}

    def execution() -> dict[str, Any]:
        body: dict[str, Any] = server.get(
            f"/api/v1/executions/{execution_id}", headers=headers
        ).json()
        return body

    return eventually_sync(
        execution,
        until=lambda body: body["status"] in {"SUCCESS", "FAILED", "CANCELLED"},
        what=f"execution {execution_id} finished",
        within=20,
        every=0.05,
    )


@pytest.mark.timeout(240)  # about fifteen CLI processes, each starting Python and connecting
def test_commands_from_another_directory_use_the_running_instances_embedded_database(
    tmp_path: Path,
) -> None:
    env = environment(XDG_STATE_HOME=str(tmp_path / "state"))
    data_dir = tmp_path / "project" / ".switchyard"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = elsewhere / "lead.json"
    source.write_text(json.dumps(DOCUMENT))
    with switchyard_run(["--roles", "api,worker"], env, data_dir) as server:
        server.wait_ready()
        made = run_command(["tokens", "create", "--name", "ops"], env, cwd=elsewhere)
        token = _ok(made).strip()
        headers = {"Authorization": f"Bearer {token}"}
        registered = httpx.post(  # publishing refuses a subscription to an unknown trigger
            f"{server.url}/api/v1/registry/triggers",
            json={"trigger_key": "cli-leads", "type": "event"},
            headers=headers,
        )
        assert registered.status_code == 201, registered.text
        imported = run_command(["import", str(source), "--publish"], env, cwd=elsewhere)
        workflow_id = json.loads(_ok(imported))["id"]
        assert f"embedded PostgreSQL in {data_dir}" in imported.stderr
        assert "recorded by `switchyard run`" in imported.stderr
        assert "Shape a lead" in _ok(run_command(["workflows", "list"], env, cwd=elsewhere))
        exported = json.loads(_ok(run_command(["export", workflow_id], env, cwd=elsewhere)))
        assert exported["name"] == "Shape a lead"
        sent = httpx.post(
            f"{server.url}/api/v1/events",
            json={"trigger_key": "cli-leads", "payload": {"lead": "not an object"}},
            headers=headers,
        ).json()
        [failed_id] = sent["execution_ids"]
        assert _wait_finished(server, token, failed_id)["status"] == "FAILED"

        listed = _ok(run_command(["executions", "list", "--status", "failed"], env, cwd=elsewhere))
        assert failed_id in listed
        shown = json.loads(_ok(run_command(["executions", "show", failed_id], env, cwd=elsewhere)))
        assert (shown["status"], shown["steps"][0]["step_key"]) == ("FAILED", "shape")
        retried = run_command(["executions", "retry", failed_id], env, cwd=elsewhere)
        assert json.loads(_ok(retried))["status"] in {"PENDING", "RUNNING", "FAILED"}
        assert _wait_finished(server, token, failed_id)["status"] == "FAILED"

        replayed = run_command(["events", "replay", sent["event_id"]], env, cwd=elsewhere)
        replay = json.loads(_ok(replayed))
        assert replay["replay_of"] == sent["event_id"]
        assert replay["event_id"] != sent["event_id"]
        [replay_execution] = replay["execution_ids"]
        assert replay_execution != failed_id
        assert _wait_finished(server, token, replay_execution)["status"] == "FAILED"

        run_id = httpx.post(
            f"{server.url}/api/v1/workflows/{workflow_id}/run",
            json={"input": {"lead": {"name": "Ada"}}},
            headers=headers,
        ).json()["execution_id"]
        assert _wait_finished(server, token, run_id)["status"] == "SUCCESS"
        manual = json.loads(_ok(run_command(["executions", "show", run_id], env, cwd=elsewhere)))
        again = run_command(["events", "replay", manual["trigger_event_id"]], env, cwd=elsewhere)
        [rerun_id] = json.loads(_ok(again))["execution_ids"]
        rerun = _wait_finished(server, token, rerun_id)
        assert (rerun["status"], rerun["workflow_id"]) == ("SUCCESS", workflow_id)
        assert rerun["context_data"]["trigger"] == {"lead": {"name": "Ada"}}
        cancelled = run_command(["executions", "cancel", run_id], env, cwd=elsewhere)
        assert cancelled.returncode == 1  # already finished: nothing to cancel
        assert "switchyard executions cancel:" in cancelled.stderr

        tokens = _ok(run_command(["tokens", "list"], env, cwd=elsewhere))
        assert "ops" in tokens
        assert token not in tokens
        token_id = next(line.split()[0] for line in tokens.splitlines() if " ops " in line)
        _ok(run_command(["tokens", "revoke", token_id], env, cwd=elsewhere))
        assert server.get("/api/v1/workflows", headers=headers).status_code == 401
        assert server.stop() == 0
    assert not (elsewhere / ".switchyard").exists()  # no second database, ever


def test_commands_without_a_database_fail_clearly_and_create_none(tmp_path: Path) -> None:
    env = environment(XDG_STATE_HOME=str(tmp_path / "state"))
    workflow_id = str(uuid.uuid4())
    result = run_command(["export", workflow_id], env, cwd=tmp_path)
    assert result.returncode == 3
    assert "no Switchyard database found" in result.stderr
    assert "switchyard run" in result.stderr
    assert not (tmp_path / ".switchyard").exists()
    missing = tmp_path / "not-a-data-dir"
    result = run_command(["tokens", "list", "--data-dir", str(missing)], env, cwd=tmp_path)
    assert result.returncode == 3
    assert "holds no Switchyard database" in result.stderr
    assert not missing.exists()
    result = run_command(["migrate"], {**env, "DATA_DIR": str(missing)}, cwd=tmp_path)
    assert result.returncode == 3
    assert not missing.exists()


def test_tokens_commands_on_a_configured_database_say_which_database(
    database_dsn: str, tmp_path: Path
) -> None:
    env = environment(DATABASE_URL=database_dsn)
    made = run_command(
        ["tokens", "create", "--name", "nightly", "--expires-in-days", "7"], env, cwd=tmp_path
    )
    token = _ok(made).strip()
    assert "expires" in made.stderr
    assert "(DATABASE_URL)" in made.stderr
    listed = _ok(run_command(["tokens", "list"], env, cwd=tmp_path))
    assert "nightly" in listed
    assert token not in listed
    assert not (tmp_path / ".switchyard").exists()


async def test_generate_key_prints_an_entry_the_keyring_accepts_and_version_prints(
    tmp_path: Path,
) -> None:
    env = environment(XDG_STATE_HOME=str(tmp_path / "state"))
    generated = run_command(["generate-key", "--id", "k2027"], env, cwd=tmp_path)
    entry = _ok(generated).strip()
    keyring = parse_encryption_keys([entry])
    assert entry.startswith("k2027:")
    assert keyring is not None
    assert "rotate-keys" in generated.stderr
    assert not (tmp_path / ".switchyard").exists()
    version = run_command(["--version"], env, cwd=tmp_path)
    assert _ok(version).startswith("switchyard ")
