"""Run `switchyard` as a real process, as an operator or an orchestrator would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.waiting import eventually_sync

SWITCHYARD = [sys.executable, "-m", "server"]
START_TIMEOUT_SECONDS = 40.0
ENVIRONMENT_TO_DROP = (
    "DATABASE_URL",
    "DATABASE_DIRECT_URL",
    "POSTGRES_HOST",
    "API_TOKENS",
    "ROLES",
    "PORT",
    "DATA_DIR",
)
# `switchyard run` records its data directory under XDG_STATE_HOME: never the real user's.
TEST_STATE_HOME = Path(tempfile.gettempdir()) / f"switchyard-test-state-{os.getpid()}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def environment(**values: str) -> dict[str, str]:
    """This process's environment without Switchyard settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_TO_DROP}
    env["XDG_STATE_HOME"] = str(TEST_STATE_HOME)
    env.update(values)
    return env


def run_command(
    args: list[str], env: Mapping[str, str], timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SWITCHYARD, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


class ServerProcess:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._output: str | None = None

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5, **kwargs)  # type: ignore[arg-type]

    def wait_ready(self) -> None:
        eventually_sync(
            self._ready_status,
            until=lambda status: status == 200,
            what="the server ready (GET /ready answering 200)",
            within=START_TIMEOUT_SECONDS,
            every=0.1,
        )

    def _ready_status(self) -> int | str:
        """What GET /ready answers, or why nothing answered; fails at once if the server exited."""
        if self.process.poll() is not None:
            raise AssertionError(f"server exited early: {self.output()}")
        try:
            return self.get("/ready").status_code
        except httpx.TransportError as error:
            return repr(error)

    def stop(self, timeout: float = 20) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        """Everything the process printed; call once it has exited."""
        if self._output is None:
            if self.process.poll() is None:
                return "(still running)"
            out, err = self.process.communicate()
            self._output = f"stdout:\n{out}\nstderr:\n{err}"
        return self._output


@contextmanager
def switchyard_run(
    args: list[str], env: Mapping[str, str], data_dir: Path
) -> Iterator[ServerProcess]:
    port = free_port()
    process = subprocess.Popen(
        [*SWITCHYARD, "run", "--port", str(port), "--data-dir", str(data_dir), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = ServerProcess(process, port)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        server.output()  # reap it and close its pipes
