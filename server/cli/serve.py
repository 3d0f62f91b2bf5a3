"""`switchyard run`: serve the selected roles in one process until SIGTERM/SIGINT.

On the embedded database it records where its data lives (`server.cli.locate`), so operator
commands run from any directory use this instance's database rather than a new one.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

import structlog
import uvicorn

from config.settings import Settings
from server.app import create_app
from server.cli.exit_codes import EXIT_STARTUP_FAILED, EXIT_USAGE
from server.cli.locate import record_instance
from server.db.embedded import unusable_data_dir
from server.http_limits import HttpLimits, limited_protocol

log = structlog.get_logger(__name__)


def run_command(settings: Settings, environ: Mapping[str, str]) -> int:
    # What certainly stops the start is said in one line before anything starts (no database,
    # no migration, no new API token printed for a server that never answers).
    if settings.uses_embedded_postgres and (problem := unusable_data_dir(settings.data_path)):
        print(f"switchyard run: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if problem := port_taken(settings.host, settings.port):
        print(f"switchyard run: {problem}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    # Only the embedded database needs finding; a configured one is named by its settings
    # (and a deployment's root file system may be read-only).
    if settings.uses_embedded_postgres:
        try:
            record_instance(settings, environ, f"http://{settings.host}:{settings.port}")
        except OSError as error:  # an unwritable home: the commands then need --data-dir
            log.warning("instance_not_recorded", error=f"{type(error).__name__}: {error}")
    return run_event_loop(serve(settings))


def port_taken(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (in use, not an address here), or None.

    Binds the way uvicorn will (SO_REUSEADDR, so a port in TIME_WAIT is free) and lets go; a
    process that takes the port in between still fails, later and less politely.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"HOST={host} is not an address of this machine ({error.strerror}); set HOST"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use (another `switchyard run`?); "
                    "stop that process or pass --port (or PORT) with a free port"
                )
            return f"cannot listen on {host}:{port}: {error.strerror}; set HOST and PORT"
    return None


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run the server on uvloop where it is installed (uvicorn[standard] brings it on Linux and
    macOS), as `uvicorn.run` would: its transports and callbacks cost a fraction of asyncio's
    pure-Python selector loop, which is most of a busy server's overhead."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class _Server(uvicorn.Server):
    """uvicorn without its signal re-raise: SIGTERM ends in a clean exit with our own code."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.handle_exit, signum, None)
        try:
            yield
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


async def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or a role loop crash (exit 1)."""
    exit_code = 0
    server: _Server | None = None

    def on_crash(name: str, error: BaseException) -> None:
        nonlocal exit_code
        exit_code = 1
        if server is not None:
            server.should_exit = True

    def announce(line: str) -> None:
        print(line, flush=True)

    app = create_app(settings, on_crash=on_crash, announce=announce)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        http=limited_protocol(HttpLimits.from_settings(settings)),
        ws="none",  # no WebSocket routes: an upgrade request is served as plain HTTP
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
    )
    server = _Server(config)
    announce(
        f"Switchyard ({','.join(sorted(settings.roles))}) on http://{settings.host}:{settings.port}"
        f"  - API docs: http://{settings.host}:{settings.port}/schema/swagger"
    )
    await server.serve()
    if not server.started:
        return EXIT_STARTUP_FAILED
    return exit_code
