"""Fixtures of the fault scenarios: real `switchyard` processes on loopback (`processes`), killed,
paused and cut off, and `switchyard check` as each scenario's last word.

Each scenario is bounded in time and size and stops by itself. `FAULT_SCALE=small` (the default,
run by CI with the rest of the suite) keeps them short; `FAULT_SCALE=large` (`make faults
SCALE=large`) runs them at the sizes the README quotes (`drill.py`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.faults.drill import LARGE, Process
from tests.support.credentials import API_TOKEN, ENCRYPTION_KEY
from tests.support.pooler import PgBouncer, database_settings
from tests.support.processes import SWITCHYARD, environment


@pytest.fixture
def processes(tmp_path: Path, pooler: PgBouncer | None) -> Iterator[Callable[..., Process]]:
    """Start `switchyard run` processes: `start(database_url, roles, name, **settings)`;
    through the test pooler when one runs (`tests.support.pooler`)."""
    with ExitStack() as stack:
        counter = iter(range(1000))

        def start(database_url: str, roles: str, name: str = "", **settings: str) -> Process:
            env = environment(
                **database_settings(database_url, pooler),
                ROLES=roles,
                API_TOKENS=API_TOKEN,
                ENCRYPTION_KEYS=ENCRYPTION_KEY,
                HTTP_ALLOWED_HOSTS="127.0.0.1",
                LOG_LEVEL="WARNING",
                SHUTDOWN_GRACE_SECONDS="5",
                **settings,
            )
            process = Process([], env, tmp_path, name or f"{roles}-{next(counter)}")
            stack.callback(process.close)
            return process

        yield start


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Scenarios run real processes for tens of seconds (minutes at full size)."""
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.timeout(3600 if LARGE else 300))


@pytest.fixture
def switchyard_check(tmp_path: Path) -> Callable[[str], str]:
    """Run `switchyard check` (the operator's command) on a scenario's database and object
    store, with no grace: after a scenario nothing may be stalled, pending or left behind."""

    def check(database_url: str) -> str:
        graces = ["--pending-grace", "0", "--stall-grace", "0", "--lease-grace", "0",
                  "--finish-grace", "0"]  # fmt: skip
        env = environment(DATABASE_URL=database_url, ENCRYPTION_KEYS=ENCRYPTION_KEY)
        done = subprocess.run(
            [*SWITCHYARD, "check", "--data-dir", str(tmp_path / "data"), *graces],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"switchyard check:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    return check
