"""The `switchyard` command: run the server (any mix of roles) and the operator commands.

    switchyard run [--roles api,worker,scheduler] [--host H] [--port P] [--data-dir D]
    switchyard migrate | create-token [--name N] | rotate-keys | import FILE | export ID

Settings come from the environment (config/settings.py); flags override them. A bad setting
stops the command with exit code 2 and a message naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import uvicorn

from config.settings import Settings, SettingsError, load_settings
from server.app import create_app, prepare_database
from server.db.database import database_dsn
from server.db.documents import load_document
from server.db.engine import engine_pool, open_engine, piccolo_engine
from server.db.publishing import import_workflow
from server.db.rotation import rotate_keys_command
from server.db.tokens import create_token
from server.db.variables import variables_writer
from server.db.versions import get_version, latest_version
from server.engine.document import WorkflowDocument, encode_document
from server.errors import AppError
from server.http_limits import HttpLimits, limited_protocol
from server.keyring import load_keyring
from server.log import configure_logging
from server.queue.admin import dead_jobs_command, requeue_command
from server.storage.object_store import open_object_store

EXIT_USAGE = 2
EXIT_STARTUP_FAILED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="serve the selected roles in one process")
    run.add_argument("--roles", help="comma-separated subset of api,worker,scheduler")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (default 8080)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    token = commands.add_parser("create-token", help="create an API token, print it once")
    token.add_argument("--name", default="cli", help="a label to recognise the token by")
    commands.add_parser("rotate-keys", help="re-encrypt every secret under the primary key")
    importing = commands.add_parser("import", help="import a workflow document (JSON file)")
    importing.add_argument("file", help="path of the document, or - for standard input")
    importing.add_argument("--publish", action="store_true", help="publish it as version 1")
    exporting = commands.add_parser("export", help="print a workflow as a document")
    exporting.add_argument("workflow_id", type=uuid.UUID)
    exporting.add_argument("--version", type=int, help="a version number (default: latest)")
    jobs = commands.add_parser("jobs", help="list dead jobs, or re-queue one")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    dead = jobs_commands.add_parser("dead", help="list the most recently dead jobs")
    dead.add_argument("--limit", type=int, default=50)
    requeue = jobs_commands.add_parser("requeue", help="re-queue a dead job")
    requeue.add_argument("job_id", type=int)
    for sub in jobs_commands.choices.values():
        sub.add_argument("--data-dir", help="data directory for the embedded defaults")
    for name, sub in commands.choices.items():
        if name != "jobs":
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
    if args.command == "run":
        sys.exit(run_event_loop(serve(settings)))
    if args.command == "rotate-keys":
        sys.exit(asyncio.run(rotate_keys_command(settings)))
    if args.command == "import":  # read and check the file before touching the database
        document = read_document(args.file)
    commands: dict[str, Callable[[], Awaitable[int]]] = {
        "migrate": run_migrations,
        "create-token": lambda: print_new_token(args.name),
        "import": lambda: import_document(document, args.publish, settings),
        "export": lambda: export_workflow(args.workflow_id, args.version),
        "jobs": lambda: jobs_command(args),
    }
    try:
        sys.exit(asyncio.run(with_database(settings, commands[args.command])))
    except AppError as error:
        print(f"switchyard {args.command}: {error}", file=sys.stderr)
        for problem in getattr(error, "problems", []):
            print(f"  {problem.get('field')}: {problem.get('message')}", file=sys.stderr)
        sys.exit(1)


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


async def with_database(settings: Settings, command: Callable[[], Awaitable[int]]) -> int:
    """Run an operator command with the engine open on the configured (or embedded) database."""
    with database_dsn(settings) as dsn:
        async with open_engine(dsn, min_size=1, max_size=2) as engine:
            await prepare_database(engine)
            return await command()


async def run_migrations() -> int:
    print("schema is up to date")
    return 0


async def print_new_token(name: str) -> int:
    print(await create_token(name))
    print("store it now: it is not shown again", file=sys.stderr)
    return 0


def read_document(path: str) -> WorkflowDocument:
    """The workflow document in a file (or standard input); exits 2 when it is not one."""
    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        return msgspec.json.decode(raw, type=WorkflowDocument)
    except msgspec.DecodeError as error:
        print(f"switchyard import: {path} is not a workflow document: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


async def import_document(document: WorkflowDocument, publish: bool, settings: Settings) -> int:
    """`switchyard import FILE`: the same as POST /api/v1/workflows/import."""
    async with open_object_store(settings) as store:
        version = await import_workflow(
            document,
            publish=publish,
            store=store,
            write_variables=variables_writer(load_keyring(settings)),
        )
    result = {
        "id": str(version.workflow_id),
        "version_num": version.version_num,
        "published": publish,
    }
    print(json.dumps(result))
    return 0


async def jobs_command(args: argparse.Namespace) -> int:
    """`switchyard jobs dead` / `switchyard jobs requeue ID` (the same as /api/v1/jobs)."""
    async with engine_pool(piccolo_engine()).acquire() as connection:
        if args.jobs_command == "dead":
            print(await dead_jobs_command(connection, limit=args.limit))
        else:
            print(await requeue_command(connection, args.job_id))
    return 0


async def export_workflow(workflow_id: uuid.UUID, version_num: int | None) -> int:
    """`switchyard export ID`: the same document as GET /api/v1/workflows/{id}/export."""
    if version_num is None:
        version = await latest_version(workflow_id)
    else:
        version = await get_version(workflow_id, version_num)
    print(encode_document(await load_document(version)).decode())
    return 0


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


if __name__ == "__main__":
    main()
