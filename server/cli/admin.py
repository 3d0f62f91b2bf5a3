"""Administration: `migrate`, `tokens list|create|revoke` (and the older `create-token`),
`rotate-keys` and `generate-key`.

Key rotation is safe in this order: `switchyard generate-key`, put the new entry first in
ENCRYPTION_KEYS on every process (keeping the old ones after it) and restart them all, then run
`switchyard rotate-keys`; only once it reports nothing remaining may an old key be removed. A
process that does not have the new key yet cannot read what the others sealed with it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import uuid

from config.settings import Settings
from server.access import AccessRole
from server.cli.output import print_json, print_table
from server.crypto.aead import format_key_entry, generate_key
from server.db.rotation import rotate_keys_command
from server.db.tokens import issue_token, list_tokens, revoke_token


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = commands.add_parser("migrate", help="apply pending database migrations and exit")
    migrate.set_defaults(handler=run_migrations)
    token = commands.add_parser("create-token", help="create an API token (see `tokens`)")
    add_token_arguments(token)
    tokens = commands.add_parser("tokens", help="list, create or revoke API tokens")
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="stored tokens (never the token itself)").set_defaults(
        handler=list_tokens_command
    )
    add_token_arguments(actions.add_parser("create", help="create a token and print it once"))
    revoke = actions.add_parser("revoke", help="revoke a token: refused at once everywhere")
    revoke.add_argument("token_id", type=uuid.UUID)
    revoke.set_defaults(handler=revoke_token_command, audit="token.revoke", audit_target="token_id")
    rotate = commands.add_parser(
        "rotate-keys", help="re-encrypt every secret under the primary key"
    )
    rotate.set_defaults(handler=rotate_keys, opens_database=True, audit="keys.rotate")
    generate = commands.add_parser(
        "generate-key", help="print a new encryption key to put first in ENCRYPTION_KEYS"
    )
    generate.add_argument("--id", help="the key id (default: k<UTC date and time>)")
    generate.set_defaults(handler=generate_key_command, database=False)


def add_token_arguments(create: argparse.ArgumentParser) -> None:
    create.add_argument("--name", default="cli", help="a label to recognise the token by")
    create.add_argument(
        "--role",
        choices=[role.value for role in AccessRole],
        default=AccessRole.ADMIN.value,
        help="what the token may do (default admin; see the README's roles table)",
    )
    create.add_argument(
        "--trigger-key",
        action="append",
        dest="trigger_keys",
        metavar="KEY",
        help="an ingest token may send events to this trigger key only (repeatable)",
    )
    create.add_argument("--expires-in-days", type=float, help="the token stops working then")
    create.set_defaults(handler=create_token_command, audit="token.create")


async def run_migrations(args: argparse.Namespace, settings: Settings) -> int:
    print("schema is up to date")
    return 0


async def create_token_command(args: argparse.Namespace, settings: Settings) -> int:
    expires_at = None
    if args.expires_in_days is not None:
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=args.expires_in_days)
    token = await issue_token(
        args.name,
        role=AccessRole(args.role),
        trigger_keys=args.trigger_keys,
        expires_at=expires_at,
    )
    args.audit_target_id = token.id
    print(token.token)
    expiry = f", expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else ""
    print(
        f"token {token.id} ({token.name}, {token.role}{expiry}): store it now, "
        "it is not shown again",
        file=sys.stderr,
    )
    return 0


async def list_tokens_command(args: argparse.Namespace, settings: Settings) -> int:
    items = await list_tokens(limit=1000)
    print_table(
        ("ID", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED", "REVOKED"),
        [
            (t.id, t.name, t.role, t.created_at, t.expires_at, t.last_used_at, t.revoked_at)
            for t in items
        ],
    )
    return 0


async def revoke_token_command(args: argparse.Namespace, settings: Settings) -> int:
    token = await revoke_token(args.token_id)
    print_json({"id": token.id, "name": token.name, "revoked_at": token.revoked_at})
    return 0


async def rotate_keys(args: argparse.Namespace, settings: Settings) -> int:
    return await rotate_keys_command(settings)


async def generate_key_command(args: argparse.Namespace, settings: Settings) -> int:
    key_id = args.id or f"k{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"
    try:
        print(format_key_entry(key_id, generate_key()))
    except ValueError as error:
        print(f"switchyard generate-key: {error}", file=sys.stderr)
        return 2
    print(
        "put it first in ENCRYPTION_KEYS on every process (keep the old keys after it), "
        "restart them all, then run `switchyard rotate-keys`",
        file=sys.stderr,
    )
    return 0
