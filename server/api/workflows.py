"""`/api/v1/workflows`: workflow definitions."""

from __future__ import annotations

import datetime as dt
import uuid
from http import HTTPStatus

from litestar import Controller, get

from server.api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from server.api.problems import problem
from server.db.workflows import WorkflowSummary, list_workflows


class WorkflowController(Controller):
    path = "/workflows"
    tags = ("workflows",)

    @get("/")
    async def list(
        self, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
    ) -> Page[WorkflowSummary]:
        """Workflow definitions, oldest first."""
        key = decode_cursor(cursor, 2)
        after = None
        if key is not None:
            try:
                after = (dt.datetime.fromisoformat(key[0]), uuid.UUID(key[1]))
            except ValueError:
                raise problem(
                    HTTPStatus.BAD_REQUEST, "cursor is not valid; omit it to start again"
                ) from None
        items = await list_workflows(limit=limit + 1, after=after)
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_cursor = encode_cursor([last.created_at.isoformat(), str(last.id)])
        return Page(items=items, next_cursor=next_cursor)
