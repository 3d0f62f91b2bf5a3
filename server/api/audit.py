"""`GET /api/v1/audit`: the audit log, newest first (admin only).

Filters: `target` (a target id, or `type:id`, e.g. `workflow:0b5c...`; a bare type ends with a
colon: `token:`), `token` (a stored token's id, or a name such as `API_TOKENS #1` or
`cli:alice`), `since` (at or after). Entries are written by `server.api.audit_trail` and the
CLI (`server.cli.audit`) and leave only by retention (`RETENTION_DAYS`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

import asyncpg
from litestar import Controller, get
from litestar.params import FromQuery

from server.api.deps import Injected
from server.api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, page, time_and_id
from server.db.audit import AuditEntry, AuditFilter, list_audit_entries


class AuditController(Controller):
    path = "/audit"
    opt: Mapping[str, str] = {"role": "admin"}
    tags = ("audit",)

    @get("/")
    async def list_entries(
        self,
        pool: Injected[asyncpg.Pool],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        target: FromQuery[str | None] = None,
        token: FromQuery[str | None] = None,
        since: FromQuery[dt.datetime | None] = None,
    ) -> Page[AuditEntry]:
        """Who changed what, newest first: each entry's time, token (id, name, role), action,
        target, summary (never a secret), request id and source address. Filter by `target`
        (an id, or `type:id`), `token` (an id or a name) and `since`."""
        async with pool.acquire() as connection:
            items = await list_audit_entries(
                connection,
                limit=limit + 1,
                before=time_and_id(cursor),
                where=_filter(target, token, since),
            )
        return page(items, limit, lambda item: (item.at, item.id))


def _filter(target: str | None, token: str | None, since: dt.datetime | None) -> AuditFilter:
    target_type = target_id = None
    if target is not None:
        kind, separator, rest = target.partition(":")
        target_type, target_id = (kind, rest or None) if separator else (None, target)
    token_id = token_name = None
    if token is not None:
        try:
            token_id = uuid.UUID(token)
        except ValueError:
            token_name = token
    return AuditFilter(
        target_id=target_id,
        target_type=target_type,
        token_id=token_id,
        token_name=token_name,
        since=since,
    )
