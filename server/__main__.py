"""The `switchyard` command: run the server (any mix of roles) and the operator commands.

    switchyard run [--roles api,worker,scheduler] [--host H] [--port P] [--data-dir D]
    switchyard migrate | create-token [--name N] | rotate-keys | import FILE | export ID

Settings come from the environment (config/settings.py); flags override them. A bad setting
stops the command with exit code 2 and a message naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from config.settings import Settings, SettingsError, load_settings
from server.app import create_app, prepare_database
from server.db.database import database_dsn
from server.db.engine import open_engine
from server.db.tokens import create_token
from server.log import configure_logging

EXIT_USAGE = 2
EXIT_STARTUP_FAILED = 3
LATER = {
    "rotate-keys": "secret encryption (issue 3: design-time API, secrets)",
    "import": "workflow import (issue 3: design-time API)",
    "export": "workflow export (issue 3: design-time API)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="serve the selected roles in one process")
    run.add_argument("--roles", help="comma-separated subset of api,worker,scheduler")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (default 8080)")
    for name, text in [
        ("migrate", "apply pending database migrations and exit"),
        ("create-token", "create an API token, print it once"),
        ("rotate-keys", "re-encrypt every secret under the primary key"),
        ("import", "import a workflow document (JSON file)"),
        ("export", "print a workflow as a document"),
    ]:
        sub = commands.add_parser(name, help=text)
        if name == "create-token":
            sub.add_argument("--name", default="cli", help="a label to recognise the token by")
        if name == "import":
            sub.add_argument("file")
        if name == "export":
            sub.add_argument("workflow_id")
    for sub in commands.choices.values():
        sub.add_argument("--data-dir", help="data directory for the embedded defaults")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    overrides = {
        "roles": args.roles.split(",") if getattr(args, "roles", None) else None,
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "data_dir": args.data_dir,
    }
    try:
        settings = load_settings(os.environ, overrides)
    except SettingsError as error:
        print(f"switchyard: configuration error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    configure_logging(settings.log_level, settings.log_format)
    if args.command in LATER:
        print(
            f"switchyard {args.command}: not available yet; it comes with {LATER[args.command]}",
            file=sys.stderr,
        )
        sys.exit(EXIT_USAGE)
    if args.command == "run":
        sys.exit(asyncio.run(serve(settings)))
    if args.command == "migrate":
        sys.exit(asyncio.run(with_database(settings, run_migrations)))
    if args.command == "create-token":
        sys.exit(asyncio.run(with_database(settings, partial_create_token(args.name))))


async def with_database(settings: Settings, command: Callable[[], Awaitable[int]]) -> int:
    """Run an operator command with the engine open on the configured (or embedded) database."""
    with database_dsn(settings) as dsn:
        async with open_engine(dsn, min_size=1, max_size=2) as engine:
            await prepare_database(engine)
            return await command()


async def run_migrations() -> int:
    print("schema is up to date")
    return 0


def partial_create_token(name: str) -> Callable[[], Awaitable[int]]:
    async def command() -> int:
        token = await create_token(name)
        print(token)
        print("store it now: it is not shown again", file=sys.stderr)
        return 0

    return command


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


if __name__ == "__main__":
    main()
