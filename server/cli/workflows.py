"""`switchyard import FILE`, `switchyard export ID` and `switchyard workflows list`: the same
as their `/api/v1/workflows` counterparts, on the located database."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import msgspec

from config.settings import Settings
from server.cli.output import print_json, print_table
from server.crypto.aead import format_key_entry, generate_key, parse_encryption_keys
from server.db.documents import load_document
from server.db.publishing import import_workflow, replace_document
from server.db.variables import variables_writer
from server.db.versions import get_version, latest_version
from server.db.workflows import list_workflows
from server.engine.document import WorkflowDocument, encode_document
from server.keyring import load_keyring
from server.storage.object_store import open_object_store

EXIT_USAGE = 2


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    importing = commands.add_parser("import", help="import a workflow document (JSON file)")
    importing.add_argument("file", help="path of the document, or - for standard input")
    importing.add_argument("--publish", action="store_true", help="publish it as version 1")
    importing.add_argument(
        "--workflow",
        type=uuid.UUID,
        metavar="ID",
        help="make it the next version of this existing workflow (fixing forward)",
    )
    importing.set_defaults(
        handler=import_document, prepare=read_document_argument, audit="workflow.import"
    )
    exporting = commands.add_parser("export", help="print a workflow as a document")
    exporting.add_argument("workflow_id", type=uuid.UUID)
    exporting.add_argument("--version", type=int, help="a version number (default: latest)")
    exporting.set_defaults(handler=export_workflow)
    workflows = commands.add_parser("workflows", help="list workflows")
    actions = workflows.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="workflow definitions, oldest first")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=list_workflows_command)


def read_document_argument(args: argparse.Namespace) -> None:
    """Read and check the file before touching the database; exits 2 when it is no document."""
    path: str = args.file
    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        args.document = msgspec.json.decode(raw, type=WorkflowDocument)
    except msgspec.DecodeError as error:
        print(f"switchyard import: {path} is not a workflow document: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


async def import_document(args: argparse.Namespace, settings: Settings) -> int:
    """`switchyard import FILE`: the same as POST /api/v1/workflows/import; with `--workflow
    ID`, as PUT /api/v1/workflows/{id}/document (the next version of that workflow)."""
    document: WorkflowDocument = args.document
    if any(variable.secret for variable in document.variables):
        try:  # the server's keys: a key made here could seal what no server can read
            keyring = load_keyring(settings, create=False)
        except ValueError as error:
            print(f"switchyard import: {error}", file=sys.stderr)
            return EXIT_USAGE
    else:  # nothing to seal: no key file is read or made
        keyring = parse_encryption_keys([format_key_entry("unused", generate_key())])
    writer = variables_writer(keyring)
    hosts = settings.http_allowed_hosts
    async with open_object_store(settings) as store:
        if args.workflow is None:
            version = await import_workflow(
                document, publish=args.publish, store=store, write_variables=writer,
                http_allowed_hosts=hosts,
            )  # fmt: skip
        else:
            version = await replace_document(
                args.workflow, document, publish=args.publish, store=store,
                write_variables=writer, http_allowed_hosts=hosts,
            )  # fmt: skip
    args.audit_target_id = version.workflow_id
    print_json(
        {"id": version.workflow_id, "version_num": version.version_num, "published": args.publish}
    )
    return 0


async def export_workflow(args: argparse.Namespace, settings: Settings) -> int:
    """`switchyard export ID`: the same document as GET /api/v1/workflows/{id}/export."""
    if args.version is None:
        version = await latest_version(args.workflow_id)
    else:
        version = await get_version(args.workflow_id, args.version)
    print(encode_document(await load_document(version)).decode())
    return 0


async def list_workflows_command(args: argparse.Namespace, settings: Settings) -> int:
    items = await list_workflows(limit=args.limit, after=None)
    print_table(
        ("ID", "NAME", "ACTIVE", "CATEGORY", "UPDATED"),
        [(w.id, w.name, w.is_active, w.category or None, w.updated_at) for w in items],
    )
    return 0
