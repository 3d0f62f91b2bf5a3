"""`switchyard check`: prove the invariants on a deployment's database and object store.

Read-only: it opens its own connection (no migration, no seeding) and reads one snapshot; see
`server.db.check_report`. Exit 0: every invariant holds; 1: a violation (each listed with its
ids); 2: a bad argument; 3: something could not be checked.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg

from config.settings import Settings
from server.cli.exit_codes import EXIT_USAGE
from server.db.check_report import (
    EXIT_INCOMPLETE,
    CheckOptions,
    check_deployment,
    render_json,
    render_text,
)
from server.db.database import database_addresses
from server.db.invariants import Graces
from server.storage.object_store import open_object_store


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check", help="check the invariants of a deployment (read-only; exit 1 on a violation)"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    seconds: dict[str, Any] = {"type": float, "metavar": "SECONDS"}
    check.add_argument(
        "--pending-grace", default=300.0, **seconds,
        help="how long a database change's event may wait for its fan-out (default 300)",
    )  # fmt: skip
    check.add_argument(
        "--stall-grace", default=120.0, **seconds,
        help="how long an unfinished execution may lack a live job (default 120)",
    )  # fmt: skip
    check.add_argument(
        "--lease-grace", **seconds,
        help="how long past its end a lease may be held (default: JOB_LEASE_SECONDS, min 60)",
    )  # fmt: skip
    check.add_argument(
        "--finish-grace", **seconds,
        help="how long a finished execution's job may stay live "
        "(default: JOB_TIMEOUT_SECONDS + JOB_RETRY_MAX_SECONDS)",
    )  # fmt: skip
    check.add_argument(
        "--timeout", default=30.0, **seconds,
        help="limit of each statement and each object read (default 30)",
    )  # fmt: skip
    check.add_argument(
        "--limit", type=int, default=100, help="violations listed per invariant (default 100)"
    )
    check.set_defaults(handler=check_command, opens_database=True)


async def check_command(args: argparse.Namespace, settings: Settings) -> int:
    """Prove the invariants on the located database and the configured object store."""
    if args.limit < 1 or args.timeout <= 0:
        print("switchyard check: --limit must be 1 or more, --timeout above 0", file=sys.stderr)
        return EXIT_USAGE
    graces = Graces(
        pending_seconds=args.pending_grace,
        stall_seconds=args.stall_grace,
        lease_seconds=(
            args.lease_grace
            if args.lease_grace is not None
            else max(60.0, settings.job_lease_seconds)
        ),
        finish_seconds=(
            args.finish_grace
            if args.finish_grace is not None
            else settings.job_timeout_seconds + settings.job_retry_max_seconds
        ),
        retention_seconds=settings.retention_days * 86_400.0,
    )
    options = CheckOptions(graces=graces, timeout_seconds=args.timeout, max_violations=args.limit)
    try:
        # The direct address: the check's session is read-only by a startup setting.
        with database_addresses(settings) as addresses:
            async with open_object_store(settings) as store:
                report = await check_deployment(addresses.direct, store, options)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        print(f"switchyard check: could not read the database: {error}", file=sys.stderr)
        return EXIT_INCOMPLETE
    print(render_json(report) if args.json else render_text(report))
    return report.exit_code
