"""Console pages stay fast with 100,000 executions: the database is seeded with one
`INSERT ... SELECT generate_series` (spread over three workflows, every status and trigger
type, one run every 30 s back in time), one of them with 50 recorded steps (two attempts
each) on a 50-step workflow with branches and joins; then each page is requested in the app
(in-process, so the time measured is the server's plus an in-memory transport) and its
median must stay under 100 ms. The figures are printed (`pytest -s`) for the README."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import asyncpg
import httpx
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN

EXECUTIONS: Final = 100_000
STEPS: Final = 50
SAMPLES: Final = 9
BUDGET_MS: Final = 100.0

pytestmark = pytest.mark.timeout(300)

SEED_EXECUTIONS: Final = """
INSERT INTO workflow_execution
    (id, workflow_id, version_id, status, context_data, trigger_type, error, steps_run,
     created_at, started_at, finished_at, updated_at)
SELECT gen_random_uuid(), ($1::uuid[])[1 + g % 3], ($2::uuid[])[1 + g % 3],
       (ARRAY['SUCCESS', 'SUCCESS', 'SUCCESS', 'FAILED', 'RUNNING', 'WAITING', 'CANCELLED',
              'PENDING'])[1 + g % 8],
       jsonb_build_object('trigger', jsonb_build_object('n', g)),
       (ARRAY['webhook', 'schedule', 'event', 'manual', 'database'])[1 + g % 5],
       CASE WHEN g % 8 = 3 THEN 'step ''s07'' failed: HTTP 500' END, 3,
       now() - make_interval(secs => g * 30), now() - make_interval(secs => g * 30),
       now() - make_interval(secs => g * 30 - 2), now() - make_interval(secs => g * 30 - 2)
FROM generate_series(1, $3::int) AS g
"""

SEED_STEPS: Final = """
INSERT INTO step_execution
    (id, execution_id, step_id, step_key, status, input_data, result_data, attempts,
     execution_time, attempts_history, branches, created_at, started_at, finished_at)
SELECT gen_random_uuid(), $1, s.id, s.step_key, 'SUCCESS', s.cfg, '{"ok": true}'::jsonb, 2, 35.5,
       jsonb_build_array(jsonb_build_object(
           'attempt', 1, 'status', 'FAILED', 'error', 'HTTP 503 from the partner',
           'started_at', now() - interval '10 s' + s.position * interval '150 ms',
           'finished_at', now() - interval '10 s' + s.position * interval '150 ms'
                          + interval '40 ms',
           'duration_ms', 40)),
       ARRAY['default']::varchar[],
       now() - interval '10 s' + s.position * interval '150 ms',
       now() - interval '10 s' + s.position * interval '150 ms' + interval '90 ms',
       now() - interval '10 s' + s.position * interval '150 ms' + interval '125 ms'
FROM workflow_step s WHERE s.version_id = $2
"""


def fifty_steps(name: str) -> dict[str, Any]:
    """A 50-step workflow: a chain with a condition every 10 steps (both branches join two
    steps later) and an extra join edge every 7 steps."""
    steps: list[dict[str, Any]] = []
    edges: list[dict[str, str]] = []
    for n in range(STEPS):
        key = f"s{n:02d}"
        if n % 10 == 5:
            steps.append({"key": key, "kind": "condition", "cfg": {"expression": "true"}})
        else:
            steps.append(
                {"key": key, "kind": "action", "action_key": "transform",
                 "cfg": {"output": {"n": n}}}
            )  # fmt: skip
    for n in range(1, STEPS):
        source, target = f"s{n - 1:02d}", f"s{n:02d}"
        if (n - 1) % 10 == 5:
            edges.append({"from": source, "to": target, "branch_key": "true"})
            edges.append({"from": source, "to": f"s{n + 1:02d}", "branch_key": "false"})
        else:
            edges.append({"from": source, "to": target})
        if n % 7 == 0 and n >= 3 and (n - 3) % 10 != 5:
            edges.append({"from": f"s{n - 3:02d}", "to": target})
    return {"name": name, "steps": steps, "edges": edges}


@pytest.fixture
async def seeded(
    settings_for: Callable[..., Settings], database_dsn: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    app = create_app(settings_for(roles=frozenset({Role.API})))
    async with serving(app, token=API_TOKEN) as api:
        ids = []
        for n in range(3):
            answer = await api.post(
                "/api/v1/workflows/import", params={"publish": "true"},
                json=fifty_steps(f"Fifty steps {n}"),
            )  # fmt: skip
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
        connection = await asyncpg.connect(database_dsn)
        try:
            versions = [
                await connection.fetchval(
                    "SELECT id FROM workflow_version WHERE workflow_id = $1", workflow_id
                )
                for workflow_id in ids
            ]
            started = time.perf_counter()
            await connection.execute(SEED_EXECUTIONS, ids, versions, EXECUTIONS)
            await connection.execute("ANALYZE workflow_execution")
            seconds = time.perf_counter() - started
            print(f"\nseeded {EXECUTIONS} executions in {seconds:.1f} s")  # noqa: T201
            execution_id = await connection.fetchval(
                "SELECT id FROM workflow_execution WHERE status = 'FAILED' "
                "ORDER BY created_at DESC LIMIT 1 OFFSET 5000"
            )
            workflow_of = await connection.fetchval(
                "SELECT workflow_id FROM workflow_execution WHERE id = $1", execution_id
            )
            version_of = versions[ids.index(str(workflow_of))]
            await connection.execute(SEED_STEPS, execution_id, version_of)
        finally:
            await connection.close()
        client = httpx.AsyncClient(transport=api._transport, base_url="http://switchyard.test")
        signed = await client.post("/console/login", data={"token": API_TOKEN})
        assert signed.status_code == 303
        yield client, {"execution": str(execution_id), "workflow": ids[0]}


async def median_ms(client: httpx.AsyncClient, path: str, **params: str) -> float:
    timings = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        response = await client.get(path, params=params)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text[:500]
    return statistics.median(timings[1:])  # the first request warms caches up


async def test_console_pages_answer_within_100_ms_with_100k_executions(
    seeded: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, ids = seeded
    first = await client.get("/console/executions")
    cursor = first.text.split("cursor=")[1].split('"')[0].replace("&amp;", "&")
    pages = {
        "executions, first page": ("/console/executions", {}),
        "executions, page 2": ("/console/executions", {"cursor": cursor}),
        "executions, status FAILED": ("/console/executions", {"status": "FAILED"}),
        "executions, one workflow": ("/console/executions", {"workflow_id": ids["workflow"]}),
        "executions, trigger database": ("/console/executions", {"trigger_type": "database"}),
        "executions, a time window": (
            "/console/executions",
            {"created_after": "2026-01-01T00:00", "created_before": "2026-12-31T00:00"},
        ),
        "one execution (50 steps)": (f"/console/executions/{ids['execution']}", {}),
        "one workflow (50 steps)": (f"/console/workflows/{ids['workflow']}", {}),
        "workflows": ("/console/workflows", {}),
        "triggers": ("/console/triggers", {}),
        "dead jobs": ("/console/jobs/dead", {}),
    }
    figures = {
        name: await median_ms(client, path, **params) for name, (path, params) in pages.items()
    }
    for name, milliseconds in figures.items():
        print(f"{name:32} {milliseconds:6.1f} ms (median of {SAMPLES - 1})")  # noqa: T201
    slow = {name: ms for name, ms in figures.items() if ms > BUDGET_MS}
    assert not slow, f"over {BUDGET_MS} ms: {slow}"
