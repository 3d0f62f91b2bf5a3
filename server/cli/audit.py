"""The CLI's audit trail: operator commands that change state append an audit entry.

The operator commands (`import`, `tokens create|revoke`, `create-token`, `rotate-keys`,
`executions retry|cancel`, `events replay`, `jobs requeue`) work on the database directly, so
whoever runs them already holds the database's credentials: they act as admin, with no token.
Each such command declares its action (`set_defaults(audit="workflow.import",
audit_target="workflow")`, the argument holding the target's id) and the dispatcher
(`server.__main__`) appends one entry when it succeeds, in this one place: the actor is
`cli:<OS user>` with role admin and no token id, the source `cli@<host name>`, the summary the
command and its plain arguments (never a document or a secret). A command whose target is
made by the command itself names it with `args.audit_target_id`.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from server.access import AccessRole, Principal
from server.db.audit import AuditRecord, append_audit_entry
from server.db.pool import asyncpg_pool, piccolo_database

INTERNAL_ARGUMENTS: Final = frozenset(
    {"handler", "prepare", "audit", "audit_target", "audit_target_id", "database",
     "opens_database", "data_dir", "command", "action", "document"}
)  # fmt: skip


def command_principal() -> Principal:
    """Who runs a CLI command: the OS user, acting as admin."""
    return Principal(token_id=None, name=f"cli:{getpass.getuser()}", role=AccessRole.ADMIN)


def is_audited(args: argparse.Namespace) -> bool:
    return isinstance(getattr(args, "audit", None), str)


async def audited(run: Callable[[], Awaitable[int]], args: argparse.Namespace) -> int:
    """Run a command; append its audit entry when it is audited and succeeded."""
    code = await run()
    if code == 0 and is_audited(args):
        await record_command(args)
    return code


async def record_command(args: argparse.Namespace) -> None:
    """Append the audit entry of a command that succeeded (the pool must be open)."""
    action: str = args.audit
    target = getattr(args, "audit_target_id", None)
    if target is None and (name := getattr(args, "audit_target", None)):
        target = getattr(args, name, None)
    command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    record = AuditRecord(
        principal=command_principal(),
        action=action,
        target_type=action.partition(".")[0],
        target_id=None if target is None else str(target),
        summary={"command": command, "arguments": _plain_arguments(args)},
        request_id=uuid.uuid4().hex,
        source=f"cli@{socket.gethostname()}",
    )
    async with asyncpg_pool(piccolo_database()).acquire() as connection:
        await append_audit_entry(connection, record)


def _plain_arguments(args: argparse.Namespace) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for name, value in vars(args).items():
        if name in INTERNAL_ARGUMENTS:
            continue
        if isinstance(value, uuid.UUID):
            plain[name] = str(value)
        elif (
            value is None
            or isinstance(value, str | int | float | bool)
            or (isinstance(value, list) and all(isinstance(item, str) for item in value))
        ):
            plain[name] = value
    return plain
