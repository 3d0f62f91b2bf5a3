"""`switchyard check`: run every invariant against a deployment and report the verdict.

It opens one connection of its own (not the server's pool; no migration, no seeding: it never
writes), in a session whose transactions default to read-only, runs the SQL invariants in one
read-only snapshot (`server.db.invariants`), closes the connection, then compares the published
documents with the object store (`server.db.stored_documents`). The verdict: every invariant
holds (exit 0), at least one is violated (exit 1, each violation listed with its ids), or some
could not be checked (exit 3: the database or the store did not answer in time).
"""

from __future__ import annotations

from typing import Final

import asyncpg
import msgspec

from server.db.invariant_runner import InvariantResult, check_database
from server.db.invariants import Graces
from server.db.stored_documents import check_published_documents
from server.storage.object_store import ObjectStore

EXIT_HOLDS: Final = 0
EXIT_VIOLATED: Final = 1
EXIT_INCOMPLETE: Final = 3
CONNECT_TIMEOUT_SECONDS: Final = 10.0


class CheckOptions(msgspec.Struct, frozen=True, kw_only=True):
    graces: Graces = Graces()
    timeout_seconds: float = 30.0  # per statement and per object read
    max_violations: int = 100  # listed per invariant


class CheckReport(msgspec.Struct, frozen=True, kw_only=True):
    invariants: list[InvariantResult]

    @property
    def exit_code(self) -> int:
        if any(result.violations or result.more for result in self.invariants):
            return EXIT_VIOLATED
        if any(result.error is not None for result in self.invariants):
            return EXIT_INCOMPLETE
        return EXIT_HOLDS


async def check_deployment(dsn: str, store: ObjectStore, options: CheckOptions) -> CheckReport:
    """Check the database at `dsn` and the documents in `store`.

    Raises:
        OSError, asyncpg.PostgresError: the database could not be reached or read at all.
    """
    connection = await asyncpg.connect(
        dsn,
        timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=options.timeout_seconds * 2,
        server_settings={
            "application_name": "switchyard-check",
            "default_transaction_read_only": "on",
        },
    )
    try:
        database = await check_database(
            connection,
            options.graces,
            statement_timeout_seconds=options.timeout_seconds,
            max_violations=options.max_violations,
        )
    finally:
        await connection.close()
    results = list(database.results)
    if database.published is not None:
        results.append(
            await check_published_documents(
                database.published,
                store,
                timeout_seconds=options.timeout_seconds,
                max_violations=options.max_violations,
            )
        )
    return CheckReport(invariants=results)


def render_text(report: CheckReport) -> str:
    """The report for a person: one line per invariant, then each violation with its ids."""
    lines: list[str] = []
    for result in report.invariants:
        if result.holds:
            lines.append(f"ok    {result.name}: {result.description}")
            continue
        if result.violations:
            count = f"{len(result.violations)}{'+' if result.more else ''}"
            lines.append(f"FAIL  {result.name}: {result.description} ({count} violation(s))")
        for violation in result.violations:
            ids = " ".join(f"{key}={value}" for key, value in violation.ids.items())
            lines.append(f"      {ids}: {violation.detail}")
        if result.more:
            lines.append("      ... more not listed (raise --limit to see them)")
        if result.error is not None:
            lines.append(f"??    {result.name}: {result.description}: {result.error}")
    verdict = {
        EXIT_HOLDS: "every invariant holds",
        EXIT_VIOLATED: "invariants violated",
        EXIT_INCOMPLETE: "some invariants could not be checked",
    }[report.exit_code]
    lines.append(verdict)
    return "\n".join(lines)


def render_json(report: CheckReport) -> str:
    """The report as JSON: {"ok", "exit_code", "invariants": [{name, description, holds,
    violations: [{ids, detail}], more, error}]}."""
    return msgspec.json.encode(
        {
            "ok": report.exit_code == EXIT_HOLDS,
            "exit_code": report.exit_code,
            "invariants": [
                {**msgspec.structs.asdict(result), "holds": result.holds}
                for result in report.invariants
            ],
        }
    ).decode()
