"""Runs across real worker processes: concurrent joins, restarts and kills lose nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.conftest import API_TOKEN
from tests.e2e.conftest import import_published, run, steps_by_key, wait_for
from tests.e2e.test_runs import fan_out_document
from tests.support.apps import serving
from tests.support.invariants import assert_invariants
from tests.support.processes import ServerProcess, environment, switchyard_run


@pytest.fixture
def api_settings(settings_for: Callable[..., Settings]) -> Settings:
    # The same outbound allowance as the workers (`start_worker`): publishing checks it.
    return settings_for(roles=frozenset({Role.API}), http_allowed_hosts=("127.0.0.1",))


@pytest.fixture
async def api_only(api_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(api_settings), token=API_TOKEN) as client:
        yield client


@pytest.fixture
def start_worker(database_dsn: str, tmp_path: Path) -> Iterator[Callable[[], ServerProcess]]:
    """Start `switchyard run --roles worker` processes on this test's database."""
    env = environment(
        DATABASE_URL=database_dsn,
        JOB_LEASE_SECONDS="2",
        JOB_POLL_INTERVAL_SECONDS="0.2",
        WORKER_CONCURRENCY="8",
        DB_POOL_MAX_SIZE="16",
        ENCRYPTION_KEYS="test:" + "A" * 43 + "=",
        HTTP_ALLOWED_HOSTS="127.0.0.1",
    )
    with ExitStack() as stack:

        def start() -> ServerProcess:
            worker = stack.enter_context(
                switchyard_run(["--roles", "worker"], env, tmp_path / "data")
            )
            worker.wait_ready()
            return worker

        yield start


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
