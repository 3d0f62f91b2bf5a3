"""Invariant 8: every published version's document is in the object store and matches its rows.

Publishing writes the version's document (`encode_document(masked(...))`) to the object store
before the row that names it, so every published version must find its object under `s3_key`,
decodable as a workflow document. Its steps and edges must be the version's own rows, rebuilt
the way `server.db.documents.load_document` builds them (steps by position then key, edges in
canonical order): those parts belong to the version and never change once it is published. The
name, description, category, tags, variables and subscriptions belong to the workflow and may
change after a version was published (a rename, a new variable), so they are not compared.

The reads run outside the database transaction (no network call holds a snapshot open), a few
at a time, each bounded by the check's timeout.
"""

from __future__ import annotations

import asyncio
from typing import Final

import msgspec

from server.db.invariant_runner import InvariantResult, PublishedGraph, Violation
from server.db.invariants import DOCUMENTS_DESCRIPTION, DOCUMENTS_INVARIANT
from server.engine.document import Edge, Step, WorkflowDocument, normalized
from server.errors import NotFoundError
from server.storage.object_store import ObjectStore, ObjectStoreError

CONCURRENT_READS: Final = 8


class _UnreadableError(Exception):
    """The store could not answer for one version (not a violation: the check is incomplete)."""


async def check_published_documents(
    published: list[PublishedGraph],
    store: ObjectStore,
    *,
    timeout_seconds: float,
    max_violations: int,
) -> InvariantResult:
    """Compare each published version's stored document with its rows."""
    gate = asyncio.Semaphore(CONCURRENT_READS)

    async def one(version: PublishedGraph) -> str | None:
        async with gate:
            return await _problem(version, store, timeout_seconds)

    outcomes = await asyncio.gather(*(one(v) for v in published), return_exceptions=True)
    violations: list[Violation] = []
    unreadable: list[str] = []
    for version, outcome in zip(published, outcomes, strict=True):
        if isinstance(outcome, _UnreadableError):
            unreadable.append(f"{version.s3_key}: {outcome}")
        elif isinstance(outcome, BaseException):
            raise outcome
        elif outcome is not None:
            violations.append(Violation(ids=_ids(version), detail=outcome))
    error = None
    if unreadable:
        error = f"not checked: {len(unreadable)} document(s) unreadable, e.g. {unreadable[0]}"
    return InvariantResult(
        name=DOCUMENTS_INVARIANT,
        description=DOCUMENTS_DESCRIPTION,
        violations=violations[:max_violations],
        more=len(violations) > max_violations,
        error=error,
    )


def _ids(version: PublishedGraph) -> dict[str, str]:
    ids = {
        "version_id": str(version.version_id),
        "workflow_id": str(version.workflow_id),
        "version_num": str(version.version_num),
    }
    if version.s3_key is not None:
        ids["s3_key"] = version.s3_key
    return ids


async def _problem(
    version: PublishedGraph, store: ObjectStore, timeout_seconds: float
) -> str | None:
    """What is wrong with this version's stored document, or None."""
    if version.s3_key is None:
        return "published, but s3_key is empty: no document was recorded"
    try:
        async with asyncio.timeout(timeout_seconds):
            raw = await store.get(version.s3_key)
    except NotFoundError:
        return "the document is missing from the object store"
    except (ObjectStoreError, TimeoutError) as error:
        raise _UnreadableError(str(error) or "timed out") from error
    try:
        stored = msgspec.json.decode(raw, type=WorkflowDocument)
    except msgspec.DecodeError as error:
        return f"the stored object is not a workflow document: {error}"
    rebuilt = msgspec.structs.replace(
        stored,
        steps=msgspec.json.decode(version.steps, type=list[Step]),
        edges=msgspec.json.decode(version.edges, type=list[Edge]),
    )
    return _difference(normalized(stored), normalized(rebuilt))


def _difference(stored: WorkflowDocument, rows: WorkflowDocument) -> str | None:
    """Which steps and edges differ between the stored document and the rows."""
    problems: list[str] = []
    stored_steps = {step.key: step for step in stored.steps}
    row_steps = {step.key: step for step in rows.steps}
    if only := sorted(row_steps.keys() - stored_steps.keys()):
        problems.append(f"steps missing from the document: {', '.join(only)}")
    if only := sorted(stored_steps.keys() - row_steps.keys()):
        problems.append(f"steps only in the document: {', '.join(only)}")
    if changed := sorted(
        k for k in row_steps.keys() & stored_steps.keys() if row_steps[k] != stored_steps[k]
    ):
        problems.append(f"steps that differ: {', '.join(changed)}")
    if not problems and [s.key for s in stored.steps] != [s.key for s in rows.steps]:
        problems.append("the steps are in another order")
    if stored.edges != rows.edges:
        edges = {(e.source, e.target, e.branch_key) for e in stored.edges}
        row_edges = {(e.source, e.target, e.branch_key) for e in rows.edges}
        missing = [f"{a}->{b} ({k})" for a, b, k in sorted(row_edges - edges)]
        extra = [f"{a}->{b} ({k})" for a, b, k in sorted(edges - row_edges)]
        problems.append(
            "edges differ"
            + (f"; missing from the document: {', '.join(missing)}" if missing else "")
            + (f"; only in the document: {', '.join(extra)}" if extra else "")
        )
    return "; ".join(problems) or None
