"""The `switchyard` command: run the server (any mix of roles) and the operator commands.

    switchyard run [--roles api,worker,scheduler] [--host H] [--port P] [--data-dir D]
    switchyard migrate | import FILE [--workflow ID] | export ID | workflows list
    switchyard executions list|show|retry|cancel | events replay ID | jobs dead|requeue
    switchyard tokens list|create|revoke | create-token | rotate-keys | generate-key
    switchyard check [--json] [--pending-grace S] [--stall-grace S] [--limit N] ...
    switchyard --version

Settings come from the environment (config/settings.py); flags override them. The commands
that change state act as admin (they hold the database's credentials already) and each appends
an audit entry naming the OS user (`server.cli.audit`). A bad setting
stops the command with exit code 2 and a message naming the variable. Only `run` may create a
database: every other command uses the running instance's (`server.cli.locate`), says which on
stderr, and exits 3 when there is none. The commands live in `server.cli` by group.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from config.settings import Settings, SettingsError, load_settings
from server.app import prepared_pool
from server.cli import admin, check, executions, workflows
from server.cli.audit import audited, is_audited, record_command
from server.cli.exit_codes import EXIT_NO_DATABASE, EXIT_USAGE
from server.cli.locate import DatabaseNotFoundError, locate_database
from server.cli.serve import run_command
from server.db.database import database_addresses
from server.db.embedded import EmbeddedPostgresError
from server.errors import AppError
from server.log import configure_logging

T = TypeVar("T")
Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"switchyard {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="serve the selected roles in one process")
    run.add_argument("--roles", help="comma-separated subset of api,worker,scheduler")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (default 8080)")
    workflows.add_commands(commands)
    executions.add_commands(commands)
    admin.add_commands(commands)
    check.add_commands(commands)
    for sub in _leaf_parsers(commands):
        sub.add_argument("--data-dir", help="data directory (default ./.switchyard)")
    return parser


def _leaf_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    leaves = []
    for sub in commands.choices.values():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        leaves.extend(_leaf_parsers(nested[0]) if nested else [sub])
    return leaves


def package_version() -> str:
    try:
        return version("switchyard")
    except PackageNotFoundError:
        return "unknown (not installed)"


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
        sys.exit(run_command(settings, os.environ))
    if not getattr(args, "database", True):  # needs no database at all
        sys.exit(asyncio.run(args.handler(args, settings)))
    if prepare := getattr(args, "prepare", None):
        prepare(args)  # e.g. read and check a file before touching the database
    name = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    given = args.data_dir is not None or bool(os.environ.get("DATA_DIR"))
    try:
        located = locate_database(settings, os.environ, data_dir_given=given)
    except DatabaseNotFoundError as error:
        print(f"switchyard {name}: {error}", file=sys.stderr)
        sys.exit(EXIT_NO_DATABASE)
    print(f"switchyard: database: {located.description}", file=sys.stderr)
    handler: Handler = args.handler
    try:
        if getattr(args, "opens_database", False):
            code = asyncio.run(handler(args, located.settings))
            if code == 0 and is_audited(args):
                asyncio.run(with_database(located.settings, lambda: record_command(args)))
            sys.exit(code)
        sys.exit(
            asyncio.run(
                with_database(
                    located.settings,
                    lambda: audited(lambda: handler(args, located.settings), args),
                )
            )
        )
    except EmbeddedPostgresError as error:
        print(f"switchyard {name}: {error}", file=sys.stderr)
        sys.exit(EXIT_NO_DATABASE)
    except AppError as error:
        print(f"switchyard {name}: {error}", file=sys.stderr)
        for problem in getattr(error, "problems", []):
            print(f"  {problem.get('field')}: {problem.get('message')}", file=sys.stderr)
        sys.exit(1)


async def with_database(settings: Settings, command: Callable[[], Awaitable[T]]) -> T:
    """Run an operator command with the pool open on the located database."""
    with database_addresses(settings) as addresses:
        async with prepared_pool(addresses, min_size=1, max_size=2):
            return await command()


if __name__ == "__main__":
    main()
