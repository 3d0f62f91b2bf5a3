"""`/health`, `/ready` and `/metrics`: served by every role, outside API auth.

`/health` says the process is alive. `/ready` says it can do its work: the database answers
and its schema is the one this build expects (so a replica of an older build never takes
traffic against a newer schema, or the reverse). `/metrics` is Prometheus text.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import asyncpg
import msgspec
from litestar import MediaType, Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

from server.api.problems import problem
from server.db.engine import engine_pool
from server.db.migrations import pending_migrations
from server.queue.client import queue_depth

READY_TIMEOUT_SECONDS = 2.0


class HealthStatus(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    roles: list[str]


@get("/health", include_in_schema=True, tags=["operations"], sync_to_thread=False)
def health(state: State) -> HealthStatus:
    """Liveness: the process is up and its event loop answers."""
    return HealthStatus(status="ok", roles=sorted(state.settings.roles))


@get("/ready", tags=["operations"])
async def ready(state: State) -> HealthStatus:
    """Readiness: the database is reachable and the schema is current."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with engine_pool(state.engine).acquire() as connection:
                pending = await pending_migrations(connection)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise problem(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"the database is not reachable ({error.__class__.__name__})",
            slug="not-ready",
        ) from error
    if pending:
        raise problem(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"the database schema is behind this build ({len(pending)} migrations pending); "
            "run `switchyard migrate`",
            slug="not-ready",
        )
    return HealthStatus(status="ready", roles=sorted(state.settings.roles))


QUEUE_JOBS = Gauge("switchyard_queue_jobs", "Jobs in the queue table", ["kind", "state"])
QUEUE_OLDEST_DUE = Gauge(
    "switchyard_queue_oldest_due_seconds", "Age of the oldest due queued job", ["kind"]
)


@get("/metrics", tags=["operations"], media_type=MediaType.TEXT)
async def metrics(state: State) -> Response[bytes]:
    """Prometheus metrics of this process, plus the queue's depth read from the database."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with engine_pool(state.engine).acquire() as connection:
                depth = await queue_depth(connection)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        depth = None  # the process metrics still answer; /ready reports the database
    if depth is not None:
        QUEUE_JOBS.clear()
        QUEUE_OLDEST_DUE.clear()
        for row in depth:
            QUEUE_JOBS.labels(row.kind, row.state.value).set(row.count)
            if row.oldest_due_seconds is not None:
                QUEUE_OLDEST_DUE.labels(row.kind).set(row.oldest_due_seconds)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


ROUTES = [health, ready, metrics]
