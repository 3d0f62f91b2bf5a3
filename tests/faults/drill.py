"""What every fault scenario shares: its size (`FAULT_SCALE=small`, the default run by CI with the
rest of the suite, or `large`, the sizes the README quotes) and the `switchyard run` process it
starts, kills, pauses and stops (`Process`; the `processes` fixture starts them); and what the
kill drills share: their workers' settings and waiting for every execution to finish."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Final

import asyncpg
import httpx

from tests.support.processes import SWITCHYARD, free_port
from tests.support.waiting import eventually, eventually_sync

SCALE: Final = os.environ.get("FAULT_SCALE", "small")
LARGE: Final = SCALE == "large"
START_TIMEOUT_SECONDS: Final = 60.0


DRAIN_TIMEOUT_SECONDS: Final = 600.0
# The worker processes of the kill drills: short leases, so a killed worker's jobs return soon.
KILL_DRILL_WORKER: Final = {
    "JOB_LEASE_SECONDS": "2",
    "JOB_POLL_INTERVAL_SECONDS": "0.2",
    "WORKER_CONCURRENCY": "16",
    "DB_POOL_MAX_SIZE": "24",
}


def sized(small: int, large: int) -> int:
    return large if LARGE else small


async def unfinished(connection: asyncpg.Connection) -> int:
    """How many executions are not finished yet."""
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM workflow_execution"
            " WHERE status NOT IN ('SUCCESS', 'FAILED', 'CANCELLED')"
        )
    )


async def wait_until_drained(connection: asyncpg.Connection) -> None:
    """Wait until every execution has finished (within DRAIN_TIMEOUT_SECONDS)."""
    await eventually(
        lambda: unfinished(connection),
        until=lambda left: left == 0,
        what="every execution finished (last value: executions unfinished)",
        within=DRAIN_TIMEOUT_SECONDS,
        every=0.5,
    )


class Process:
    """One `switchyard run` whose output goes to a file (a pipe nobody reads would block it)."""

    def __init__(
        self, args: list[str], env: dict[str, str], workdir: Path, name: str, port: int = 0
    ) -> None:
        self.port = port or free_port()
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
