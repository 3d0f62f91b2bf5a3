"""`switchyard check`: clean after real runs; each invariant, broken on purpose, is reported.

Every test first runs real work through the engine (API and worker in one app: manual runs,
events accepted, filtered and unmatched, a database change fanned out, a durable delay still
waiting), stops the app so nothing repairs what the test breaks, then breaks one thing with
direct SQL (or in the object store) and expects exactly that, with its ids.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from config.settings import Role, Settings
from server.app import create_app
from server.db.check_report import (
    EXIT_HOLDS,
    EXIT_INCOMPLETE,
    EXIT_VIOLATED,
    CheckOptions,
    check_deployment,
)
from server.db.database_triggers import trigger_name
from server.db.invariant_runner import Violation
from server.storage.object_store import open_object_store
from tests.e2e.test_runs import LEADS
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.invariants import NO_GRACE, check_invariants
from tests.support.processes import environment, run_command
from tests.support.waiting import eventually
from tests.support.workflows import import_published, run, wait_for

DATABASE_SOURCE = {
    "trigger_key": "lead_sources_db_change",
    "type": "database",
    "config": {"table": "lead_sources", "operations": ["INSERT", "UPDATE", "DELETE"]},
}
ON_ROW: dict[str, Any] = {
    "name": "On row",
    "steps": [
        {"key": "seen", "kind": "action", "action_key": "transform",
         "cfg": {"output": {"op": "{{ trigger.operation }}"}}},
    ],
    "subscriptions": [{"trigger_key": "lead_sources_db_change"}],
}  # fmt: skip
LONG_WAIT: dict[str, Any] = {
    "name": "Long wait",
    "steps": [
        {"key": "wait", "kind": "delay", "cfg": {"seconds": 3600}},
        {"key": "after", "kind": "action", "action_key": "set_variables",
         "cfg": {"values": {"woke": True}}},
    ],
    "edges": [{"from": "wait", "to": "after"}],
}  # fmt: skip
ALL_INVARIANTS = [
    "events_have_executions",
    "unfinished_executions_have_work",
    "one_success_per_step",
    "one_task_per_key",
    "no_jobs_of_finished_executions",
    "leases_within_ttl",
    "capture_triggers_installed",
    "published_documents_stored",
]


class Landmarks(msgspec.Struct, frozen=True, kw_only=True):
    """What the real runs left behind, by role."""

    leads_workflow: str
    hot_execution: str  # SUCCESS, created a task
    accepted_event: str
    filtered_event: str
    no_match_event: str
    row_event: str  # recorded by the capture trigger, fanned out
    waiting_execution: str  # WAITING on a one-hour delay


@pytest.fixture
def settings(settings_for: Callable[..., Settings]) -> Settings:
    return settings_for(
        roles=frozenset({Role.API, Role.WORKER}),
        job_poll_interval_seconds=0.2,
        database_trigger_tables=("lead_sources",),
    )


@pytest.fixture
async def landmarks(settings: Settings, database_dsn: str) -> Landmarks:
    """Real runs through the engine; the app is stopped when the test starts."""
    await _sql(database_dsn, "CREATE TABLE lead_sources (id serial PRIMARY KEY, name text)")
    async with serving(create_app(settings), token=API_TOKEN) as client:
        return await _real_runs(client, database_dsn)


async def _real_runs(client: httpx.AsyncClient, database_dsn: str) -> Landmarks:
    for source in (
        {"trigger_key": "orders", "type": "event"},
        {"trigger_key": "nobody", "type": "event"},
        DATABASE_SOURCE,
    ):
        assert (await client.post("/api/v1/registry/triggers", json=source)).status_code == 201
    leads = await import_published(
        client,
        {**LEADS, "subscriptions": [
            {"trigger_key": "orders", "filter_conditions": {"expression": "trigger.score >= 0"}}
        ]},
    )  # fmt: skip
    on_row = await import_published(client, ON_ROW)
    long_wait = await import_published(client, LONG_WAIT)
    hot = await run(client, leads, {"score": 90, "name": "Ann"})
    cold = await run(client, leads, {"score": 10, "name": "Bob"})  # through a 0.5 s delay
    accepted = await _event(client, "orders", {"score": 70, "name": "Eve"})
    filtered = await _event(client, "orders", {"score": -1, "name": "Neg"})
    no_match = await _event(client, "nobody", {})
    await _sql(database_dsn, "INSERT INTO lead_sources (name) VALUES ('row')")
    waiting = await run(client, long_wait)
    for execution_id in (hot, cold, *accepted["execution_ids"]):
        assert (await wait_for(client, execution_id))["status"] == "SUCCESS"
    row_execution = await _only_execution(client, on_row)
    assert (await wait_for(client, row_execution["id"]))["status"] == "SUCCESS"
    await wait_for(client, waiting, {"WAITING"})
    assert (filtered["outcome"], no_match["outcome"]) == ("filtered", "no_match")
    return Landmarks(
        leads_workflow=leads,
        hot_execution=hot,
        accepted_event=accepted["event_id"],
        filtered_event=filtered["event_id"],
        no_match_event=no_match["event_id"],
        row_event=row_execution["trigger_event_id"],
        waiting_execution=waiting,
    )


async def _event(client: httpx.AsyncClient, key: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/v1/events", json={"trigger_key": key, "payload": payload})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def _only_execution(client: httpx.AsyncClient, workflow_id: str) -> dict[str, Any]:
    async def listed() -> list[dict[str, Any]]:
        page = await client.get("/api/v1/executions", params={"workflow_id": workflow_id})
        items: list[dict[str, Any]] = page.json()["items"]
        return items

    items = await eventually(listed, what="an execution started by the row change", within=15)
    execution: dict[str, Any] = (await client.get(f"/api/v1/executions/{items[0]['id']}")).json()
    return execution


async def _sql(dsn: str, statement: str, *arguments: object) -> Any:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(statement, *arguments)
    finally:
        await connection.close()


async def _violations(settings: Settings) -> dict[str, list[Violation]]:
    """The violations of each violated invariant; every invariant must have been checked."""
    report = await check_invariants(settings)
    assert [result.name for result in report.invariants] == ALL_INVARIANTS
    assert [r.error for r in report.invariants if r.error] == []
    found = {result.name: result.violations for result in report.invariants if result.violations}
    assert report.exit_code == (EXIT_VIOLATED if found else EXIT_HOLDS)
    return found


async def test_a_database_after_real_runs_satisfies_every_invariant(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    # The real runs left every kind of row the invariants read, one execution still waiting.
    counts = await _sql(
        database_dsn,
        """SELECT (SELECT count(*) FROM tasks) AS tasks,
                  (SELECT count(*) FROM job WHERE state = 'queued') AS queued,
                  (SELECT count(DISTINCT outcome) FROM trigger_event) AS outcomes,
                  (SELECT count(*) FROM workflow_version WHERE status = 'published') AS published""",
    )
    assert dict(counts[0]) == {"tasks": 2, "queued": 1, "outcomes": 3, "published": 3}
    assert await _violations(settings) == {}


async def test_events_without_executions_or_a_reason_are_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    await _sql(
        database_dsn, "DELETE FROM workflow_execution WHERE trigger_event_id = $1",
        landmarks.accepted_event,
    )  # fmt: skip
    await _sql(
        database_dsn, "UPDATE trigger_event SET outcome_detail = NULL WHERE id = $1",
        landmarks.filtered_event,
    )  # fmt: skip
    # A database change's event that was never fanned out, and has no job to do it.
    await _sql(
        database_dsn, "UPDATE trigger_event SET outcome = 'pending' WHERE id = $1",
        landmarks.no_match_event,
    )  # fmt: skip
    found = await _violations(settings)
    assert list(found) == ["events_have_executions"]
    details = {v.ids["event_id"]: v.detail for v in found["events_have_executions"]}
    assert details == {
        landmarks.accepted_event: "accepted but has no execution",
        landmarks.filtered_event: "filtered without a recorded reason (outcome_detail is empty)",
        landmarks.no_match_event: "pending (database change) with no queued or running fan-out job",
    }


async def test_a_pending_event_older_than_the_grace_is_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    await _sql(
        database_dsn,
        """UPDATE trigger_event SET outcome = 'pending', received_at = now() - interval '1 hour'
           WHERE id = $1""",
        landmarks.row_event,
    )
    await _sql(
        database_dsn,
        "INSERT INTO job (kind, payload, unique_key, run_at) VALUES ('trigger_event', $1::jsonb, $2, now() + interval '1 day')",
        json.dumps({"event_id": landmarks.row_event}), f"event:{landmarks.row_event}",
    )  # fmt: skip
    found = await _violations(settings)
    (violation,) = found["events_have_executions"]
    assert violation.ids["event_id"] == landmarks.row_event
    assert violation.detail.startswith("pending (database change) for 01:00:0")
    # Within the grace (and with its fan-out job queued) the same event is fine.
    report = await check_invariants(
        settings, msgspec.structs.replace(NO_GRACE, pending_seconds=7200)
    )
    assert report.exit_code == EXIT_HOLDS


async def test_unfinished_executions_without_a_live_job_are_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    # A finished execution marked running again: no job will ever run it (its job died).
    await _sql(
        database_dsn,
        "UPDATE workflow_execution SET status = 'RUNNING', finished_at = NULL WHERE id = $1",
        landmarks.hot_execution,
    )
    await _sql(
        database_dsn,
        """INSERT INTO job (kind, payload, state, last_error)
           VALUES ('workflow_step', $1::jsonb, 'dead', 'worker lost')""",
        json.dumps({"execution_id": landmarks.hot_execution, "step_key": "task"}),
    )
    # A waiting delay whose wake-up job is gone: it would wait forever.
    await _sql(
        database_dsn, "DELETE FROM job WHERE payload->>'execution_id' = $1",
        landmarks.waiting_execution,
    )  # fmt: skip
    found = await _violations(settings)
    assert list(found) == ["unfinished_executions_have_work"]
    got = {(v.ids["execution_id"], v.ids.get("step_key")): v.detail for v in found[
        "unfinished_executions_have_work"]}  # fmt: skip
    dead_job = await _sql(database_dsn, "SELECT id FROM job WHERE state = 'dead'")
    assert got == {
        (landmarks.hot_execution, None): "RUNNING execution has no queued or running job "
        f"(job {dead_job[0]['id']} is dead: worker lost)",
        (landmarks.waiting_execution, None): "WAITING execution has no queued or running job",
    }


async def test_a_waiting_step_without_its_wake_up_is_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    # The execution keeps a live job, but for another step: the delay itself never wakes.
    await _sql(
        database_dsn,
        """UPDATE job SET payload = jsonb_build_object('execution_id', $1::text, 'step_key', 'after')
           WHERE payload->>'execution_id' = $1""",
        landmarks.waiting_execution,
    )
    found = await _violations(settings)
    (violation,) = found["unfinished_executions_have_work"]
    assert violation.ids == {"execution_id": landmarks.waiting_execution, "step_key": "wait"}
    assert (
        violation.detail
        == "WAITING delay step of a WAITING execution has no queued or running wake-up job"
    )
    # Within the grace the execution is not judged yet.
    graces = msgspec.structs.replace(NO_GRACE, stall_seconds=3600)
    assert (await check_invariants(settings, graces)).exit_code == EXIT_HOLDS


async def test_two_successful_results_of_one_step_are_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    await _sql(database_dsn, "DROP INDEX step_execution_step_key")
    rows = await _sql(
        database_dsn,
        """INSERT INTO step_execution (id, execution_id, step_id, step_key, status, result_data,
                                       attempts, created_at, branches)
           SELECT gen_random_uuid(), execution_id, step_id, step_key, status, result_data,
                  attempts, clock_timestamp(), branches
           FROM step_execution WHERE execution_id = $1 AND step_key = 'hot'
           RETURNING id, step_id""",
        landmarks.hot_execution,
    )
    found = await _violations(settings)
    (violation,) = found["one_success_per_step"]
    assert violation.ids["execution_id"] == landmarks.hot_execution
    assert violation.ids["step_id"] == str(rows[0]["step_id"])
    assert violation.ids["step_key"] == "hot"
    assert str(rows[0]["id"]) in violation.ids["step_execution_ids"].split(",")
    assert violation.detail == "2 successful results for one step"


async def test_a_task_duplicated_under_one_idempotency_key_is_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    constraint = await _sql(
        database_dsn,
        """SELECT conname FROM pg_constraint
           WHERE conrelid = 'tasks'::regclass AND contype = 'u'""",
    )
    await _sql(database_dsn, f'ALTER TABLE tasks DROP CONSTRAINT "{constraint[0]["conname"]}"')
    rows = await _sql(
        database_dsn,
        """INSERT INTO tasks (id, title, description, status, execution_id, idempotency_key)
           SELECT gen_random_uuid(), title, description, status, execution_id, idempotency_key
           FROM tasks WHERE execution_id = $1
           RETURNING id, idempotency_key""",
        landmarks.hot_execution,
    )
    found = await _violations(settings)
    (violation,) = found["one_task_per_key"]
    assert violation.ids["idempotency_key"] == rows[0]["idempotency_key"]
    assert str(rows[0]["id"]) in violation.ids["task_ids"].split(",")
    assert violation.detail == "2 tasks share one idempotency key"


async def test_a_live_job_of_a_finished_execution_is_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    rows = await _sql(
        database_dsn,
        """INSERT INTO job (kind, payload, run_at)
           VALUES ('workflow_step', $1::jsonb, now() + interval '1 day') RETURNING id""",
        json.dumps({"execution_id": landmarks.hot_execution, "step_key": "hot"}),
    )
    found = await _violations(settings)
    (violation,) = found["no_jobs_of_finished_executions"]
    assert violation.ids == {"job_id": str(rows[0]["id"]), "execution_id": landmarks.hot_execution}
    assert violation.detail.startswith("queued job (step 'hot') of an execution SUCCESS since ")
    graces = msgspec.structs.replace(NO_GRACE, finish_seconds=3600)
    assert (await check_invariants(settings, graces)).exit_code == EXIT_HOLDS


async def test_a_lease_held_past_its_end_is_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    rows = await _sql(
        database_dsn,
        """UPDATE job SET state = 'running', locked_by = 'worker-gone', attempts = 1,
                          lease_token = gen_random_uuid(),
                          locked_until = now() - interval '10 minutes'
           WHERE payload->>'execution_id' = $1 RETURNING id""",
        landmarks.waiting_execution,
    )
    found = await _violations(settings)
    (violation,) = found["leases_within_ttl"]
    assert violation.ids == {"job_id": str(rows[0]["id"]), "kind": "workflow_step"}
    assert violation.detail.startswith(
        "running workflow_step job held by worker-gone: its lease ended 00:10:0"
    )
    graces = msgspec.structs.replace(NO_GRACE, lease_seconds=3600)
    assert (await check_invariants(settings, graces)).exit_code == EXIT_HOLDS


async def test_a_listed_capture_trigger_that_is_not_installed_is_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    name = trigger_name(DATABASE_SOURCE["trigger_key"])  # type: ignore[arg-type]
    await _sql(database_dsn, f"ALTER TABLE lead_sources DISABLE TRIGGER {name}")
    found = await _violations(settings)
    (violation,) = found["capture_triggers_installed"]
    assert violation.ids == {"trigger_key": "lead_sources_db_change", "table": "lead_sources"}
    assert violation.detail == f"capture trigger {name} on lead_sources is disabled"

    await _sql(database_dsn, f"DROP TRIGGER {name} ON lead_sources")
    found = await _violations(settings)
    (violation,) = found["capture_triggers_installed"]
    assert violation.detail == f"capture trigger {name} is missing on lead_sources"


async def test_a_published_document_missing_or_unlike_its_rows_is_reported(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    versions = {
        row["name"]: row
        for row in await _sql(
            database_dsn,
            """SELECT d.name, v.id, v.workflow_id, v.s3_key FROM workflow_version v
               JOIN workflow_definition d ON d.id = v.workflow_id""",
        )
    }
    objects = settings.data_path.resolve() / "objects"
    (objects / versions["Long wait"]["s3_key"]).unlink()
    # A row changed after publishing: the stored document no longer describes the version.
    await _sql(
        database_dsn,
        "UPDATE workflow_step SET cfg = '{\"seconds\": 5}' WHERE version_id = $1 AND step_key = 'later'",
        versions["Lead processing"]["id"],
    )
    found = await _violations(settings)
    got = {v.ids["version_id"]: (v.ids, v.detail) for v in found["published_documents_stored"]}
    lost, changed = versions["Long wait"], versions["Lead processing"]
    assert got == {
        str(lost["id"]): (
            {"version_id": str(lost["id"]), "workflow_id": str(lost["workflow_id"]),
             "version_num": "1", "s3_key": lost["s3_key"]},
            "the document is missing from the object store",
        ),
        str(changed["id"]): (
            {"version_id": str(changed["id"]), "workflow_id": str(changed["workflow_id"]),
             "version_num": "1", "s3_key": changed["s3_key"]},
            "steps that differ: later",
        ),
    }  # fmt: skip


async def test_a_check_held_up_by_a_lock_gives_up_in_time_and_says_so(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    blocker = await asyncpg.connect(database_dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            async with open_object_store(settings) as store:
                report = await check_deployment(
                    settings.database_url or "",
                    store,
                    CheckOptions(graces=NO_GRACE, timeout_seconds=0.5),
                )
            elapsed = time.monotonic() - started
    finally:
        await blocker.close()
    assert elapsed < 5
    unchecked = {r.name: r.error for r in report.invariants if r.error}
    assert list(unchecked) == ["one_task_per_key"]
    assert (unchecked["one_task_per_key"] or "").startswith("not checked: ")
    assert all(r.holds for r in report.invariants if r.name != "one_task_per_key")
    assert report.exit_code == EXIT_INCOMPLETE


def _check_command(database_url: str, data_dir: Path, *args: str) -> Any:
    env = environment(DATABASE_URL=database_url)
    return run_command(["check", "--data-dir", str(data_dir), *args], env)


async def test_the_check_command_exits_non_zero_listing_each_violation(
    landmarks: Landmarks, settings: Settings, database_dsn: str
) -> None:
    clean = await asyncio.to_thread(_check_command, database_dsn, settings.data_path, "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    assert report["ok"] is True
    assert [item["name"] for item in report["invariants"]] == ALL_INVARIANTS

    await _sql(
        database_dsn, "DELETE FROM workflow_execution WHERE trigger_event_id = $1",
        landmarks.accepted_event,
    )  # fmt: skip
    broken = await asyncio.to_thread(_check_command, database_dsn, settings.data_path, "--json")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    events = next(i for i in json.loads(broken.stdout)["invariants"] if not i["holds"])
    assert events["name"] == "events_have_executions"
    assert events["violations"] == [
        {"ids": {"event_id": landmarks.accepted_event, "trigger_key": "orders"},
         "detail": "accepted but has no execution"},
    ]  # fmt: skip
    text = await asyncio.to_thread(_check_command, database_dsn, settings.data_path)
    assert text.returncode == 1
    assert (
        f"event_id={landmarks.accepted_event} trigger_key=orders: accepted but has no execution"
        in text.stdout
    )
    assert text.stdout.rstrip().endswith("invariants violated")


def test_the_check_command_exits_3_when_the_database_cannot_be_read(tmp_path: Path) -> None:
    result = _check_command("postgresql://nobody@127.0.0.1:1/none", tmp_path)
    assert result.returncode == 3
    assert "could not read the database" in result.stderr
