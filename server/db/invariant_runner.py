"""The runner of the SQL invariants (`server.db.invariants`): one read-only snapshot, bounded.

`check_database` opens a `REPEATABLE READ READ ONLY` transaction on the caller's connection,
sets `statement_timeout`, `lock_timeout` (and no JIT) for it alone, and runs each invariant
under its own savepoint, limited to `max_violations + 1` rows: a check that times out or waits
for a lock is reported as not checked while the others still run. It also reads the published
versions' rows for the object-store comparison, which runs after the transaction ended.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import asyncpg
import msgspec

from server.db.invariants import (
    DOCUMENTS_DESCRIPTION,
    DOCUMENTS_INVARIANT,
    INVARIANTS,
    PUBLISHED_GRAPHS,
    Graces,
    Invariant,
)
from server.queue.client import Connection

MAX_VIOLATIONS: Final = 100  # listed per invariant by default; more are counted as "more"


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """One row that breaks an invariant: what it is (ids by name) and what is wrong."""

    ids: dict[str, str]
    detail: str


class InvariantResult(msgspec.Struct, frozen=True, kw_only=True):
    """One invariant's verdict. `error`: it could not be checked (timeout, store away)."""

    name: str
    description: str
    violations: list[Violation] = msgspec.field(default_factory=list)
    more: bool = False  # more violations than were listed
    error: str | None = None

    @property
    def holds(self) -> bool:
        return self.error is None and not self.violations and not self.more


class PublishedGraph(msgspec.Struct, frozen=True, kw_only=True):
    """A published version's key and its own rows (`PUBLISHED_GRAPHS`), steps and edges as JSON."""

    version_id: uuid.UUID
    workflow_id: uuid.UUID
    version_num: int
    s3_key: str | None
    steps: str
    edges: str


class DatabaseCheck(msgspec.Struct, frozen=True, kw_only=True):
    results: list[InvariantResult]
    published: list[PublishedGraph] | None  # None: they could not be read


async def check_database(
    connection: Connection,
    graces: Graces,
    *,
    statement_timeout_seconds: float,
    max_violations: int = MAX_VIOLATIONS,
) -> DatabaseCheck:
    """Run every SQL invariant in one read-only snapshot; also read the published graphs."""
    timeout = f"{max(1, round(statement_timeout_seconds * 1000))}ms"
    results: list[InvariantResult] = []
    published: list[PublishedGraph] | None = None
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        # set_config(..., true) is SET LOCAL: it ends with this transaction. JIT compilation
        # would cost seconds on these one-off scans (measured: 2.8 s of a 5.5 s check).
        await connection.execute(
            "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $1, true),"
            " set_config('jit', 'off', true)",
            timeout,
        )
        for invariant in INVARIANTS:
            results.append(await _run(connection, invariant, graces, max_violations))
        try:
            async with connection.transaction():  # a savepoint
                rows = await connection.fetch(PUBLISHED_GRAPHS)
            published = [PublishedGraph(**dict(row)) for row in rows]
        except (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError) as error:
            results.append(_unchecked(DOCUMENTS_INVARIANT, DOCUMENTS_DESCRIPTION, error))
    return DatabaseCheck(results=results, published=published)


async def _run(
    connection: Connection, invariant: Invariant, graces: Graces, max_violations: int
) -> InvariantResult:
    arguments: list[Any] = [*invariant.arguments(graces), max_violations + 1]
    # The check's own statement, limited by the last parameter.
    statement = f"SELECT * FROM ({invariant.sql}) AS violation LIMIT ${len(arguments)}"  # noqa: S608
    try:
        async with connection.transaction():  # a savepoint: a timeout spoils only this check
            rows = await connection.fetch(statement, *arguments)
    except (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError) as error:
        return _unchecked(invariant.name, invariant.description, error)
    violations = [
        Violation(
            ids={
                key: str(value)
                for key, value in row.items()
                if key != "detail" and value is not None
            },
            detail=row["detail"],
        )
        for row in rows[:max_violations]
    ]
    return InvariantResult(
        name=invariant.name,
        description=invariant.description,
        violations=violations,
        more=len(rows) > max_violations,
    )


def _unchecked(name: str, description: str, error: Exception) -> InvariantResult:
    return InvariantResult(
        name=name,
        description=description,
        error=f"not checked: {type(error).__name__}: {error}",
    )
