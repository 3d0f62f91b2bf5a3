"""Fixtures of the end-to-end tests: the API and a worker in one app on this test's database
(`engine_client`), or an API-only app (`api_only`) with worker processes (`start_worker`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN, ENCRYPTION_KEY
from tests.support.processes import ServerProcess, environment, switchyard_run


@pytest.fixture
def engine_settings(settings_for: Callable[..., Settings]) -> Settings:
    """The settings of `engine_client`'s app (for `tests.support.invariants.assert_invariants`)."""
    return settings_for(
        roles=frozenset({Role.API, Role.WORKER}),
        job_poll_interval_seconds=0.2,
        http_allowed_hosts=("127.0.0.1",),
    )


@pytest.fixture
async def engine_client(engine_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(engine_settings), token=API_TOKEN) as client:
        yield client


@pytest.fixture
def api_settings(settings_for: Callable[..., Settings]) -> Settings:
    # The same outbound allowance as the workers (`start_worker`): publishing checks it.
    return settings_for(roles=frozenset({Role.API}), http_allowed_hosts=("127.0.0.1",))


@pytest.fixture
async def api_only(api_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(api_settings), token=API_TOKEN) as client:
        yield client


@pytest.fixture
def start_worker(
    database_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[], ServerProcess]]:
    """Start `switchyard run --roles worker` processes on this test's database."""
    env = environment(
        **database_env,
        JOB_LEASE_SECONDS="2",
        JOB_POLL_INTERVAL_SECONDS="0.2",
        WORKER_CONCURRENCY="8",
        DB_POOL_MAX_SIZE="16",
        ENCRYPTION_KEYS=ENCRYPTION_KEY,
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
