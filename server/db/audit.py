"""The audit log (table `audit_log`): who changed what, appended, listed, pruned.

Rows are appended by the API's audit trail (`server.api.audit_trail`, one place for every
route that declares `opt["audit"]`) and by the CLI's operator commands (`server.cli.audit`).
The table is append-only at the database level (migration 2026-12-08T02:40:00): UPDATE,
DELETE and TRUNCATE are refused by triggers, except the retention prune, which goes through
the SECURITY DEFINER function `audit_log_prune` and only reaches rows over a day old.
A summary never holds a secret: its producers withhold secret-bearing fields and redact.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Final

import msgspec

from server.access import PUBLIC, Principal
from server.queue.client import Connection


class AuditChange(msgspec.Struct, frozen=True, kw_only=True):
    """What was done: the action, its target, a summary (never a secret), the request id and
    the source address."""

    action: str
    target_type: str
    target_id: str | None
    summary: dict[str, Any]
    request_id: str | None
    source: str | None


class AuditRecord(AuditChange, frozen=True, kw_only=True):
    """One change to record, with who made it (None: a public route's caller, recorded as
    `anonymous` with the role `public`)."""

    principal: Principal | None


class AuditEntry(AuditChange, frozen=True, kw_only=True):
    """A recorded change as the API shows it: when, and which token (id, name, role)."""

    id: uuid.UUID
    at: dt.datetime
    token_id: uuid.UUID | None
    token_name: str
    role: str


ANONYMOUS: Final = "anonymous"

# One row; takes no lock beyond the insert (the table has no unique key but its uuid).
APPEND_AUDIT_ENTRY: Final = """
INSERT INTO audit_log
  (token_id, token_name, role, action, target_type, target_id, summary, request_id, source)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)
"""

# Newest first, strictly before the ($1 at, $2 id) position when given; optionally one target
# ($3 id, audit_log_target_idx, and $4 type), one token ($5 id, audit_log_token_idx, or $6
# name) and at or after $7.
LIST_AUDIT_ENTRIES: Final = """
SELECT id, at, token_id, token_name, role, action, target_type, target_id,
       summary::text AS summary, request_id, source
FROM audit_log
WHERE ($1::timestamptz IS NULL OR (at, id) < ($1, $2::uuid))
  AND ($3::text IS NULL OR target_id = $3)
  AND ($4::text IS NULL OR target_type = $4)
  AND ($5::uuid IS NULL OR token_id = $5)
  AND ($6::text IS NULL OR token_name = $6)
  AND ($7::timestamptz IS NULL OR at >= $7)
ORDER BY at DESC, id DESC
LIMIT $8
"""

# The retention prune: the only way rows leave (see the module docstring); returns the count.
PRUNE_AUDIT_LOG: Final = "SELECT audit_log_prune($1, $2)"


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    target_id: str | None = None
    target_type: str | None = None
    token_id: uuid.UUID | None = None
    token_name: str | None = None
    since: dt.datetime | None = None


async def append_audit_entry(connection: Connection, record: AuditRecord) -> None:
    principal = record.principal
    await connection.execute(
        APPEND_AUDIT_ENTRY,
        None if principal is None else principal.token_id,
        ANONYMOUS if principal is None else principal.name,
        PUBLIC if principal is None else principal.role.value,
        record.action,
        record.target_type,
        record.target_id,
        msgspec.json.encode(record.summary).decode(),
        record.request_id,
        record.source,
    )


async def list_audit_entries(
    connection: Connection,
    *,
    limit: int,
    before: tuple[dt.datetime, uuid.UUID] | None,
    where: AuditFilter,
) -> list[AuditEntry]:
    at, last_id = before if before is not None else (None, None)
    rows = await connection.fetch(
        LIST_AUDIT_ENTRIES, at, last_id, where.target_id, where.target_type, where.token_id,
        where.token_name, where.since, limit,
    )  # fmt: skip
    entries = []
    for row in rows:
        values = dict(row)
        values["summary"] = msgspec.json.decode(values["summary"])
        entries.append(msgspec.convert(values, AuditEntry))
    return entries


async def prune_audit_log(connection: Connection, older_than: dt.datetime, batch: int) -> int:
    """Delete one batch of entries older than `older_than` (and over a day old)."""
    return int(await connection.fetchval(PRUNE_AUDIT_LOG, older_than, batch))
