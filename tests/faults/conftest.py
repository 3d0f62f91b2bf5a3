"""Fault scenarios: real `switchyard` processes on loopback, killed, paused and cut off.

Each scenario is bounded in time and size and stops by itself. `FAULT_SCALE=small` (the default,
run by CI with the rest of the suite) keeps them short; `FAULT_SCALE=large` (`make faults
SCALE=large`) runs them at the sizes the README quotes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Final

import httpx
import pytest

from tests.conftest import API_TOKEN
from tests.support.peers import _http_peer, http_peer  # noqa: F401 - fixtures, found by name
from tests.support.processes import SWITCHYARD, environment, free_port
from tests.support.waiting import eventually_sync

SCALE: Final = os.environ.get("FAULT_SCALE", "small")
LARGE: Final = SCALE == "large"
ENCRYPTION_KEY: Final = "test:" + "A" * 43 + "="
START_TIMEOUT_SECONDS: Final = 60.0


def sized(small: int, large: int) -> int:
    return large if LARGE else small


class Process:
    """One `switchyard run` whose output goes to a file (a pipe nobody reads would block it)."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: Path, name: str) -> None:
        self.port = free_port()
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*SWITCHYARD, "run", "--port", str(self.port), "--data-dir", str(workdir / "data"),
             *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        try:
            eventually_sync(
                self._ready_status,
                until=lambda status: status == 200,
                what=f"{self.name} ready (GET /ready answering 200)",
                within=timeout,
                every=0.1,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log()}") from None

    def _ready_status(self) -> int | str:
        """What GET /ready answers, or why nothing answered; fails at once if it exited."""
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited early")
        try:
            return httpx.get(self.url + "/ready", timeout=2).status_code
        except httpx.TransportError as error:
            return repr(error)

    def signal(self, number: signal.Signals) -> None:
        if self.process.poll() is None:
            self.process.send_signal(number)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float) -> float:
        """SIGTERM; the seconds it took to exit (AssertionError if it did not in `timeout`)."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} ignored SIGTERM for {timeout} s:\n{self.log()}"
            ) from None
        return time.monotonic() - started

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-6000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start `switchyard run` processes: `start(database_url, roles, name, **settings)`."""
    with ExitStack() as stack:
        counter = iter(range(1000))

        def start(database_url: str, roles: str, name: str = "", **settings: str) -> Process:
            env = environment(
                DATABASE_URL=database_url,
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
