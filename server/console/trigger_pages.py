"""The console's Triggers page: each trigger source with its intake health counters and last
error, the webhook endpoints with the URLs to give senders, and the schedules with their last
and next fire. Read through the REST handlers' own functions (`triggers_with_health`,
`with_public_url`, `server.db.webhooks`, `server.db.schedules`).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar import Controller, Request, get
from litestar.response import Template

from server.api.deps import Resources
from server.api.registry import triggers_with_health
from server.api.webhooks import with_public_url
from server.console.access import VIEWER
from server.console.rendering import render
from server.db.schedules import list_schedules
from server.db.webhooks import list_webhooks

SHOWN: Final = 500


class TriggerPages(Controller):
    path = "/triggers"
    include_in_schema = False

    @get("/", opt=VIEWER)
    async def triggers_page(self, request: Request[Any, Any, Any]) -> Template:
        resources = Resources(request.app.state)
        hooks = [
            with_public_url(hook, resources.settings)
            for hook in await list_webhooks(limit=SHOWN, after=None)
        ]
        # Without PUBLIC_URL the API answers a relative URL; a person needs the whole one.
        base = str(request.base_url).rstrip("/")
        hooks = [
            hook if "://" in hook.url else msgspec.structs.replace(hook, url=base + hook.url)
            for hook in hooks
        ]
        return render(
            request,
            "triggers.html",
            triggers=await triggers_with_health(resources),
            webhooks=hooks,
            schedules=await list_schedules(limit=SHOWN),
        )
