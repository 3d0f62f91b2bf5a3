"""Processes of the end-to-end benchmark: starting, watching and stopping the servers.

Servers run as child processes in their own session (stopped as a group), with their output in
a log file whose tail any failure quotes. Memory is the resident set of a server's whole
process tree (n8n's task runner included); CPU is counted for the tree, for the PostgreSQL
backends serving it and for everything else on the machine, so a figure taken while other
work competed for the two cores shows it. One run at a time per PostgreSQL server (an advisory
lock), and SIGTERM or SIGINT cancel the run so every started server is stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import msgspec
import psutil  # type: ignore[import-untyped]  # ships no type information

HOST: Final = "127.0.0.1"
READY_TIMEOUT_SECONDS: Final = 180.0
STOP_TIMEOUT_SECONDS: Final = 30.0
RSS_SAMPLE_SECONDS: Final = 0.25
RUN_LOCK_KEY: Final = 0x5377_6531  # pg_try_advisory_lock key of bench.e2e ("Swe1")


class MemorySampler:
    """Peak resident memory of some process trees (each root and all its descendants)."""

    def __init__(self, root_pids: Sequence[int]) -> None:
        self._roots = [psutil.Process(pid) for pid in root_pids]
        self.peak_bytes = 0

    def sample(self) -> None:
        total = 0
        for process in trees(self._roots):
            with suppress(psutil.Error):
                total += int(process.memory_info().rss)
        self.peak_bytes = max(self.peak_bytes, total)

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(RSS_SAMPLE_SECONDS)


class CpuUse(msgspec.Struct, frozen=True, kw_only=True):
    """CPU seconds over an interval, by who used them."""

    server_s: float
    database_s: float
    other_s: float  # everything on the machine but the server, its backends and this harness
    wall_s: float


class CpuAccount:
    """Counts CPU time from `start()` to `stop()`: the server's process trees, the database
    backends serving it (PostgreSQL pids, which may come and go), and the rest of the machine,
    so a figure taken while other work ran on the machine can be told apart."""

    def __init__(self, root_pids: Sequence[int]) -> None:
        self._roots = [psutil.Process(pid) for pid in root_pids]
        self._own = psutil.Process()
        self._database: dict[int, float] = {}
        self._server = self._busy = self._harness = self._started = 0.0

    def start(self, database_pids: Sequence[int]) -> None:
        self._server = cpu_seconds(trees(self._roots))
        self._database = {pid: cpu_seconds(processes([pid])) for pid in database_pids}
        self._harness = cpu_seconds([self._own])
        self._busy = machine_busy_seconds()
        self._started = time.monotonic()

    def stop(self, database_pids: Sequence[int]) -> CpuUse:
        server = cpu_seconds(trees(self._roots)) - self._server
        database = sum(
            cpu_seconds(processes([pid])) - self._database.get(pid, 0.0) for pid in database_pids
        )
        harness = cpu_seconds([self._own]) - self._harness
        busy = machine_busy_seconds() - self._busy
        return CpuUse(
            server_s=server,
            database_s=database,
            other_s=max(0.0, busy - server - database - harness),
            wall_s=time.monotonic() - self._started,
        )


def processes(pids: Sequence[int]) -> list[Any]:
    found = []
    for pid in pids:
        with suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def trees(roots: Sequence[Any]) -> list[Any]:
    """The roots and all their descendants still alive."""
    found = []
    for root in roots:
        with suppress(psutil.Error):
            found.extend([root, *root.children(recursive=True)])
    return found


def cpu_seconds(members: Sequence[Any]) -> float:
    total = 0.0
    for process in members:
        with suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system  # guest time is inside user already
    return float(busy + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0))


def free_port() -> int:
    """A TCP port free on loopback now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def start_process(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> asyncio.subprocess.Process:
    """Start a server with its output in `log_path`, in its own session (stopped as a group)."""
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *argv, env=dict(env), stdout=log, stderr=log, cwd=cwd, start_new_session=True
        )


async def run_command(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> None:
    """Run a set-up command to its end; a failure names the log holding its output."""
    process = await start_process(argv, env, log_path, cwd)
    if await process.wait() != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])} failed (exit {process.returncode}): {tail(log_path)}"
        )


async def stop_process(process: asyncio.subprocess.Process, name: str) -> None:
    """SIGTERM to the process group we started, SIGKILL after STOP_TIMEOUT_SECONDS."""
    if process.returncode is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
            await process.wait()
    except TimeoutError:
        print(f"{name} ignored SIGTERM for {STOP_TIMEOUT_SECONDS:.0f} s: killed", file=sys.stderr)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


@asynccontextmanager
async def exclusive_run(admin_dsn: str) -> AsyncIterator[None]:
    """Hold a session advisory lock on the admin database: two benchmarks at once would drop
    each other's databases and share the CPU."""
    connection = await asyncpg.connect(admin_dsn)
    try:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", RUN_LOCK_KEY):
            raise SystemExit("bench.e2e: another end-to-end benchmark runs on this PostgreSQL")
        yield
    finally:
        await connection.close()


@contextmanager
def cancelled_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT cancel the current task, so every server started gets stopped."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("cancelled_on_signals needs a running task")
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def busy_cores(seconds: float = 1.0) -> float:
    """Cores the rest of the machine keeps busy now (sampled for `seconds`, this process
    excluded): above ~0.5, other work will compete with the run."""
    own = psutil.Process()
    busy, mine = machine_busy_seconds(), cpu_seconds([own])
    await asyncio.sleep(seconds)
    return max(0.0, (machine_busy_seconds() - busy) - (cpu_seconds([own]) - mine)) / seconds


async def wait_until_ready(
    process: asyncio.subprocess.Process, url: str, log_path: Path, name: str
) -> None:
    """Poll `url` until it answers 200; fail early (with the log's tail) if the process exits."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {tail(log_path)}")
            with suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{name} not ready after {READY_TIMEOUT_SECONDS:.0f} s: {tail(log_path)}")


def tail(log_path: Path, lines: int = 15) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return f"(log {log_path})\n" + "\n".join(text.splitlines()[-lines:])
