"""Hostile templates in real runs: contained at a named limit while every role keeps answering,
refused when saved where that is certain; secrets never stored in any transformed form."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.timing import collector_frozen
from tests.support.workflows import import_published, run, steps_by_key, wait_for

SPIN = "{% for i in range(trigger.n) %}{% for j in range(trigger.n) %}{% endfor %}{% endfor %}"
MACRO = (
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
    "{{ f(trigger.depth) }}"
)


async def _health_times_while(client: httpx.AsyncClient, work: asyncio.Task[Any]) -> list[float]:
    """How long each /health took while `work` ran (one every 20 ms), with the test process's
    own heap out of the collector (tests.support.timing)."""
    times: list[float] = []
    with collector_frozen():
        while not work.done():
            started = time.perf_counter()
            response = await client.get("/health")
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
            await asyncio.sleep(0.02)
    return times


async def test_hostile_templates_fail_their_step_at_a_named_limit_while_health_answers(
    engine_client: httpx.AsyncClient,
) -> None:
    document = {
        "name": "Hostile",
        "steps": [
            {"key": "spin", "kind": "action", "action_key": "transform",
             "cfg": {"output": {"loop": f"x{SPIN}", "recursion": f"y{MACRO}"}}},
            {"key": "wide", "kind": "action", "action_key": "transform",
             "cfg": {"output": "{{ 'x'|center(trigger.width) }}"}},
            {"key": "check", "kind": "condition",
             "cfg": {"expression": "('%' ~ trigger.width ~ 's') % 1 == 'x'"}},
        ],
        "edges": [{"from": "spin", "to": "wide", "branch_key": "error"},
                  {"from": "wide", "to": "check", "branch_key": "error"}],
    }  # fmt: skip
    workflow_id = await import_published(engine_client, document)
    payload = {"n": 100_000, "depth": 40, "width": 300_000_000}
    execution_id = await run(engine_client, workflow_id, payload)
    waiting = asyncio.create_task(wait_for(engine_client, execution_id))
    health_times = await _health_times_while(engine_client, waiting)
    execution = waiting.result()
    assert execution["status"] == "FAILED"
    steps = steps_by_key(execution)
    assert steps["spin"]["error"] == (
        "cfg.output.loop: exceeded the limit of 100000 loop iterations per render"
    )
    assert steps["spin"]["attempts"] == 1  # a template error is final: no retry
    assert steps["wide"]["error"].startswith(
        "cfg.output: exceeded the limit of 1000000 characters or items per value"
    )
    assert "cfg.expression: format widths over 9999" in steps["check"]["error"]
    assert health_times
    assert max(health_times) < 0.5, health_times


async def test_a_cpu_bound_template_stops_at_its_cpu_limit(
    engine_client: httpx.AsyncClient,
) -> None:
    step = {"key": "cpu", "kind": "action", "action_key": "transform", "cfg": {"output": MACRO}}
    workflow_id = await import_published(engine_client, {"name": "Cpu", "steps": [step]})
    execution_id = await run(engine_client, workflow_id, {"depth": 40})
    waiting = asyncio.create_task(wait_for(engine_client, execution_id))
    health_times = await _health_times_while(engine_client, waiting)
    error = steps_by_key(waiting.result())["cpu"]["error"]
    assert error == "cfg.output: exceeded the limit of 1 s of CPU time per render"
    assert max(health_times) < 0.5, health_times


async def test_a_subscription_filter_that_would_build_too_much_refuses_the_event_not_the_api(
    engine_client: httpx.AsyncClient,
) -> None:
    await engine_client.post(
        "/api/v1/registry/triggers", json={"trigger_key": "wide-filter", "type": "event"}
    )
    document = {
        "name": "Filtered",
        "steps": [{"key": "t", "kind": "action", "action_key": "transform", "cfg": {"output": 1}}],
        "subscriptions": [
            {
                "trigger_key": "wide-filter",
                "filter_conditions": {"expression": "(trigger.s|center(trigger.w))|length > 0"},
            }
        ],
    }
    await import_published(engine_client, document)
    started = time.perf_counter()
    response = await engine_client.post(
        "/api/v1/events",
        json={"trigger_key": "wide-filter", "payload": {"s": "x", "w": 300_000_000}},
    )
    assert response.status_code == 202, response.text
    assert response.json()["execution_ids"] == []
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("cfg", "field", "limit"),
    [
        ({"output": "{{ 'x'|center(10**9) }}"}, "steps[t].cfg.output", "per value"),
        (
            {"output": "{% for i in range(100000) %}{% for j in range(100000) %}"
                       "{% endfor %}{% endfor %}"},
            "steps[t].cfg.output",
            "loop iterations",
        ),
        ({"output": '{{ "%(x)300000000s" % {"x": 1} }}'}, "steps[t].cfg.output", "format widths"),
    ],
)  # fmt: skip
async def test_the_api_refuses_a_template_that_certainly_exceeds_a_limit(
    engine_client: httpx.AsyncClient, cfg: dict[str, Any], field: str, limit: str
) -> None:
    document = {
        "name": "Refused",
        "steps": [{"key": "t", "kind": "action", "action_key": "transform", "cfg": cfg}],
    }
    response = await engine_client.post(
        "/api/v1/workflows/import", params={"publish": "true"}, json=document
    )
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(field in e["field"] and limit in e["message"] for e in errors), errors


SECRET = "Zq9-Secret-Value-77"
NUMBER_SECRET = 987654321


async def test_no_transformed_form_of_a_secret_is_stored_anywhere(
    engine_client: httpx.AsyncClient, database_dsn: str
) -> None:
    forms = {
        "upper": "{{ vars.sv|upper }}",
        "reverse": "{{ vars.sv|reverse }}",
        "urlencode": "{{ vars.sv|urlencode }}",
        "spaced": "{{ vars.sv|list|join(' ') }}",
        "embedded": "id={{ vars.sv|lower }};",
        "number": "{{ vars.pin }}",
        "number_text": "pin {{ vars.pin + 1 }}",
    }
    document = {
        "name": "Secret forms",
        "variables": [
            {"key": "sv", "value": SECRET, "secret": True},
            {"key": "pin", "value": NUMBER_SECRET, "secret": True},
        ],
        "steps": [
            {"key": "shape", "kind": "action", "action_key": "transform",
             "cfg": {"output": forms}},
            {"key": "again", "kind": "action", "action_key": "set_variables",
             "cfg": {"values": {"copy": "{{ steps.shape.output.upper }}"}}},
            {"key": "fail", "kind": "action", "action_key": "transform",
             "cfg": {"output": "{{ {}[vars.sv|lower] }}"}},
        ],
        "edges": [{"from": "shape", "to": "again"}, {"from": "again", "to": "fail"}],
    }  # fmt: skip
    workflow_id = await import_published(engine_client, document)
    execution = await wait_for(engine_client, await run(engine_client, workflow_id))
    steps = steps_by_key(execution)
    assert steps["shape"]["status"] == "SUCCESS"
    assert steps["fail"]["error"].startswith("cfg.output: the object has no attribute '[redacted]'")
    assert steps["shape"]["input_data"]["output"] == dict.fromkeys(forms, "[redacted]")
    assert set(steps["shape"]["result_data"].values()) == {"[redacted]"}
    transformed = {
        SECRET, SECRET.upper(), SECRET.lower(), SECRET[::-1], " ".join(SECRET),
        "Zq9-Secret-Value-77".replace("-", "%2D"), str(NUMBER_SECRET), str(NUMBER_SECRET + 1),
    }  # fmt: skip
    connection = await asyncpg.connect(database_dsn)
    try:
        stored = await connection.fetchval(
            "SELECT concat((SELECT string_agg(t::text, '') FROM step_execution t),"
            " (SELECT string_agg(e::text, '') FROM workflow_execution e),"
            " (SELECT string_agg(j::text, '') FROM job j))"
        )
    finally:
        await connection.close()
    leaked = [form for form in transformed if form.lower() in stored.lower()]
    assert leaked == [], leaked
