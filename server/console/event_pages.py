"""The console's page for one trigger event: what arrived, its outcome and the executions it
started (`server.db.events.get_event`, as `GET /api/v1/events/{id}` reads it)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath
from litestar.response import Template

from server.api.deps import pool_of
from server.console.access import VIEWER
from server.console.rendering import render
from server.db.events import get_event


class EventPages(Controller):
    path = "/events"
    include_in_schema = False

    @get("/{event_id:uuid}", opt=VIEWER)
    async def event_page(
        self, request: Request[Any, Any, Any], event_id: FromPath[uuid.UUID]
    ) -> Template:
        async with pool_of(request.app.state).acquire() as connection:
            event = await get_event(connection, event_id)
        return render(request, "event.html", event=event)
