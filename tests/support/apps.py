"""Drive `create_app(...)` in the test's own event loop: ASGI lifespan plus an httpx client.

Litestar's AsyncTestClient runs the app in another loop (STACK_NOTES), which breaks sharing
the Piccolo engine with the test; this runs the lifespan protocol as one task of this loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar

STARTUP_TIMEOUT_SECONDS = 30.0


@asynccontextmanager
async def serving(app: Litestar, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan, yield a client bound to it, then shut the lifespan down."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(outbox.get(), STARTUP_TIMEOUT_SECONDS)
    if started["type"] != "lifespan.startup.complete":
        await task
        raise RuntimeError(f"app failed to start: {started.get('message')}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            transport=transport, base_url="http://switchyard.test", headers=headers
        ) as client:
            yield client
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(outbox.get(), STARTUP_TIMEOUT_SECONDS)
        await task
