"""The `switchyard` command as a process: roles, signals, concurrent migrations, embedded data."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import asyncpg

from server.db.migrations import known_migrations
from tests.support.processes import environment, free_port, run_command, switchyard_run


async def test_three_concurrent_migrate_commands_leave_one_correct_schema(
    empty_database_dsn: str, tmp_path: Path
) -> None:
    env = environment(DATABASE_URL=empty_database_dsn)
    results = await asyncio.gather(
        *(
            asyncio.to_thread(run_command, ["migrate", "--data-dir", str(tmp_path)], env)
            for _ in range(3)
        )
    )
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    connection = await asyncpg.connect(empty_database_dsn)
    try:
        names = [r["name"] for r in await connection.fetch("SELECT name FROM migration")]
        actions = await connection.fetchval("SELECT count(*) FROM workflow_action_registry")
    finally:
        await connection.close()
    assert sorted(names) == sorted(known_migrations())  # each applied exactly once
    assert actions > 0


def test_worker_only_process_serves_health_not_the_api_and_stops_cleanly_on_sigterm(
    database_dsn: str, tmp_path: Path
) -> None:
    env = environment(DATABASE_URL=database_dsn, API_TOKENS="sy_t")
    with switchyard_run(["--roles", "worker"], env, tmp_path) as server:
        server.wait_ready()
        assert server.get("/health").json()["roles"] == ["worker"]
        headers = {"Authorization": "Bearer sy_t"}
        assert server.get("/api/v1/workflows", headers=headers).status_code == 404
        assert server.stop() == 0


def test_api_process_answers_with_a_token_and_exits_zero_on_sigterm(
    database_dsn: str, tmp_path: Path
) -> None:
    env = environment(DATABASE_URL=database_dsn, API_TOKENS="sy_t")
    with switchyard_run([], env, tmp_path) as server:
        server.wait_ready()
        response = server.get("/api/v1/workflows", headers={"Authorization": "Bearer sy_t"})
        assert response.status_code == 200
        assert server.stop() == 0
        assert '"event": "switchyard_stopping"' in server.output()


def test_embedded_default_prints_a_token_keeps_data_and_shares_the_data_directory(
    tmp_path: Path,
) -> None:
    env = environment()
    data_dir = tmp_path / "data"
    with switchyard_run(["--roles", "api"], env, data_dir) as first:
        first.wait_ready()
        with switchyard_run(["--roles", "worker"], env, data_dir) as second:
            second.wait_ready()  # a second process joins the same embedded server
            assert second.stop() == 0
        assert first.get("/ready").status_code == 200  # still served after the other left
        assert first.stop() == 0
        output = first.output()
    token = next(line.split()[-1] for line in output.splitlines() if line.startswith("API token"))
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()  # the last holder stopped it
    assert (data_dir / "api-token").stat().st_mode & 0o777 == 0o600
    with switchyard_run(["--roles", "api"], env, data_dir) as again:
        again.wait_ready()
        headers = {"Authorization": f"Bearer {token}"}
        assert again.get("/api/v1/workflows", headers=headers).status_code == 200
        assert again.stop() == 0


def test_a_bad_setting_stops_start_up_with_a_message_naming_it(tmp_path: Path) -> None:
    result = run_command(["run", "--data-dir", str(tmp_path)], environment(PORT="http"))
    assert result.returncode == 2
    assert "PORT: Expected `int`" in result.stderr


def test_a_data_dir_with_a_space_stops_start_up_in_one_line_before_any_token(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "my data"
    result = run_command(
        ["run", "--data-dir", str(data_dir), "--port", str(free_port())], environment()
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"switchyard run: data directory {data_dir} contains a space, which the embedded "
        "PostgreSQL cannot use; pass --data-dir (or DATA_DIR) with a path without spaces"
    ]
    assert "API token" not in result.stdout
    assert not data_dir.exists()  # nothing was created


def test_a_port_in_use_stops_start_up_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / "data"
        result = run_command(
            ["run", "--data-dir", str(data_dir), "--port", str(port)], environment()
        )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"switchyard run: port {port} on 127.0.0.1 is already in use (another `switchyard run`?); "
        "stop that process or pass --port (or PORT) with a free port"
    ]
    assert result.stdout == ""  # no token, no banner
    assert not data_dir.exists()  # no database was started


def test_import_and_export_commands_round_trip_a_document(
    database_dsn: str, tmp_path: Path
) -> None:
    document = {
        "name": "From the command line",
        "tags": ["cli"],
        "steps": [
            {
                "key": "set",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"a": 1}},
            }
        ],
        "edges": [],
        "subscriptions": [{"trigger_key": "cli", "filter_conditions": {}}],
    }
    source = tmp_path / "workflow.json"
    source.write_text(json.dumps(document))
    env = environment(DATABASE_URL=database_dsn)
    data_dir = ["--data-dir", str(tmp_path / "data")]
    asyncio.run(register_event_source(database_dsn, "cli"))
    imported = run_command(["import", str(source), "--publish", *data_dir], env)
    assert imported.returncode == 0, imported.stderr
    result = json.loads(imported.stdout)
    assert (result["version_num"], result["published"]) == (1, True)

    exported = run_command(["export", result["id"], *data_dir], env)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout) == {
        "description": "",
        "category": "",
        "variables": [],
        "on_failure": None,
        "concurrency": None,
        **document,
    }


async def register_event_source(dsn: str, trigger_key: str) -> None:
    """What `POST /api/v1/registry/triggers` does for an event source (subscriptions to a
    trigger key nothing registers are refused at publish)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO workflow_trigger_registry (trigger_key, type, description, config,"
            " is_builtin) VALUES ($1, 'event', '', '{}', false)",
            trigger_key,
        )
    finally:
        await connection.close()


def test_import_with_workflow_makes_the_next_version_of_that_workflow(
    database_dsn: str, tmp_path: Path
) -> None:
    step = {"key": "set", "kind": "action", "action_key": "set_variables"}
    document = {
        "name": "Fixed from the command line",
        "variables": [{"key": "owner", "value": "ops@example.com", "secret": False}],
        "steps": [{**step, "cfg": {"values": {"to": "{{ vars.owner }}"}}}],
    }
    source = tmp_path / "workflow.json"
    source.write_text(json.dumps(document))
    env = environment(DATABASE_URL=database_dsn)
    data_dir = ["--data-dir", str(tmp_path / "data")]
    first = run_command(["import", str(source), "--publish", *data_dir], env)
    assert first.returncode == 0, first.stderr
    workflow_id = json.loads(first.stdout)["id"]

    broken = {**document, "steps": [{**step, "cfg": {"values": {"to": "{{ vars.ownr }}"}}}]}
    source.write_text(json.dumps(broken))
    refused = run_command(
        ["import", str(source), "--workflow", workflow_id, "--publish", *data_dir], env
    )
    assert refused.returncode == 1
    assert "vars.ownr is not a variable of this workflow; variables: owner" in refused.stderr

    fixed = {**document, "variables": [], "steps": [{**step, "cfg": {"values": {"to": "x"}}}]}
    source.write_text(json.dumps(fixed))
    second = run_command(
        ["import", str(source), "--workflow", workflow_id, "--publish", *data_dir], env
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {"id": workflow_id, "version_num": 2, "published": True}
    exported = run_command(["export", workflow_id, *data_dir], env)
    assert json.loads(exported.stdout)["steps"][0]["cfg"] == {"values": {"to": "x"}}
    assert json.loads(exported.stdout)["variables"] == []  # replaced, as import does


def test_import_refuses_a_file_that_is_not_a_document(database_dsn: str, tmp_path: Path) -> None:
    source = tmp_path / "broken.json"
    source.write_text('{"name": "x", "steps": [{"key": "a", "kind": "loop"}]}')
    env = environment(DATABASE_URL=database_dsn)
    result = run_command(["import", str(source), "--data-dir", str(tmp_path)], env)
    assert result.returncode == 2
    assert "$.steps[0].kind" in result.stderr

    invalid = tmp_path / "invalid.json"
    invalid.write_text(
        '{"name": "x", "steps": [{"key": "a", "kind": "action", "action_key": "nope"}]}'
    )
    result = run_command(["import", str(invalid), "--data-dir", str(tmp_path)], env)
    assert result.returncode == 1
    assert "unknown action 'nope'" in result.stderr
