"""Runs across real worker processes: concurrent joins, restarts and kills lose nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from config.settings import Settings
from tests.e2e.test_runs import fan_out_document
from tests.support.invariants import assert_invariants
from tests.support.processes import ServerProcess
from tests.support.workflows import import_published, run, steps_by_key, wait_for


async def test_two_workers_run_each_step_once_and_each_join_once(
    api_only: httpx.AsyncClient, api_settings: Settings, start_worker: Callable[[], ServerProcess]
) -> None:
    await asyncio.to_thread(start_worker)
    await asyncio.to_thread(start_worker)
    workflow_id = await import_published(api_only, fan_out_document(10))
    execution_ids = [await run(api_only, workflow_id) for _ in range(6)]
    for execution_id in execution_ids:
        execution = await wait_for(api_only, execution_id)
        assert execution["status"] == "SUCCESS", execution
        keys = [step["step_key"] for step in execution["steps"]]
        assert len(keys) == len(set(keys)) == 20
        assert steps_by_key(execution)["join"]["result_data"] == {"total": 45}
    await assert_invariants(api_settings)


async def test_a_delay_survives_the_worker_being_killed(
    api_only: httpx.AsyncClient, api_settings: Settings, start_worker: Callable[[], ServerProcess]
) -> None:
    document = {
        "name": "Durable delay",
        "steps": [
            {"key": "wait", "kind": "delay", "cfg": {"seconds": 1.5}},
            {
                "key": "after",
                "kind": "action",
                "action_key": "set_variables",
                "cfg": {"values": {"woke": True}},
            },
        ],
        "edges": [{"from": "wait", "to": "after"}],
    }
    first = await asyncio.to_thread(start_worker)
    workflow_id = await import_published(api_only, document)
    execution_id = await run(api_only, workflow_id)
    await wait_for(api_only, execution_id, {"WAITING"})
    first.process.kill()  # no graceful stop: the wake-up job is only in the database
    first.process.wait()
    await asyncio.to_thread(start_worker)
    done = await wait_for(api_only, execution_id)
    assert done["status"] == "SUCCESS"
    assert steps_by_key(done)["after"]["result_data"] == {"woke": True}
    await assert_invariants(api_settings)
