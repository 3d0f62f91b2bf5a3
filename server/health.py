"""`/health`, `/ready` and `/metrics`: served by every role, outside API auth.

`/health` says the process is alive. `/ready` says it can do its work: the database answers
and its schema is the one this build expects (so a replica of an older build never takes
traffic against a newer schema, or the reverse). `/metrics` is Prometheus text; when
METRICS_TOKEN is set it answers only `Authorization: Bearer <METRICS_TOKEN>` (401 otherwise),
for deployments whose metrics port is reachable from outside. `/health` and `/ready` stay open:
probes carry no credentials.
"""

from __future__ import annotations

import asyncio
import hmac
from http import HTTPStatus

import asyncpg
import msgspec
from litestar import MediaType, Request, Response, get
from litestar.datastructures import State
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

from server.access import PUBLIC
from server.api.problems import problem
from server.db.migrations import pending_migrations
from server.db.pool import asyncpg_pool
from server.db.registration_runs import registration_counts, registration_expiries
from server.queue.client import Connection, queue_backlog, queue_depth
from server.triggers.registration import RegistrationState

READY_TIMEOUT_SECONDS = 2.0
OPEN = {"role": PUBLIC}  # outside API auth (server.access); /metrics checks METRICS_TOKEN itself


class HealthStatus(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    roles: list[str]


@get("/health", include_in_schema=True, tags=["operations"], sync_to_thread=False, opt=OPEN)
def health(state: State) -> HealthStatus:
    """Liveness: the process is up and its event loop answers."""
    return HealthStatus(status="ok", roles=sorted(state.settings.roles))


@get("/ready", tags=["operations"], opt=OPEN)
async def ready(state: State) -> HealthStatus:
    """Readiness: the database is reachable and the schema is current."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with asyncpg_pool(state.database).acquire() as connection:
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


# Counters and histograms would otherwise each carry a `_created` sample (their creation time
# as a float): noise in every scrape that no dashboard here reads.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

QUEUE_JOBS = Gauge(
    "switchyard_queue_jobs",
    "Jobs in the queue table (exact up to 10000 jobs, estimated from a sample above)",
    ["kind", "state"],
)
QUEUE_DUE = Gauge(
    "switchyard_queue_due_jobs", "Queued jobs due now, counted up to 10000 (scale workers on it)"
)
QUEUE_OLDEST_DUE = Gauge(
    "switchyard_queue_oldest_due_seconds", "Age of the oldest due queued job (0: none due)"
)
WEBHOOK_REGISTRATIONS = Gauge(
    "switchyard_webhook_registrations",
    "Webhook registrations by state; stale: of deleted endpoints, not yet removed at the sender",
    ["state", "stale"],
)
REGISTRATION_EXPIRY = Gauge(
    "switchyard_webhook_registration_expiry_seconds",
    "Seconds until an expiring webhook registration is renewed (negative: overdue)",
    ["webhook_id", "path"],
)


@get("/metrics", tags=["operations"], media_type=MediaType.TEXT, opt=OPEN)
async def metrics(state: State, request: Request) -> Response[bytes]:  # type: ignore[type-arg]
    """Prometheus metrics of this process, plus the queue's depth read from the database;
    with METRICS_TOKEN set, only for `Authorization: Bearer <METRICS_TOKEN>`."""
    _check_metrics_token(state.settings.metrics_token, request.headers.get("authorization", ""))
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with asyncpg_pool(state.database).acquire() as connection:
                depth = await queue_depth(connection)
                backlog = await queue_backlog(connection)
                await _registration_metrics(connection)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        pass  # the process metrics still answer; /ready reports the database
    else:
        QUEUE_JOBS.clear()
        for row in depth:
            QUEUE_JOBS.labels(row.kind, row.state.value).set(row.count)
        QUEUE_DUE.set(backlog.due_jobs)
        QUEUE_OLDEST_DUE.set(backlog.oldest_due_seconds or 0.0)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _registration_metrics(connection: Connection) -> None:
    counts = await registration_counts(connection)
    expiries = await registration_expiries(connection)
    WEBHOOK_REGISTRATIONS.clear()
    for state in RegistrationState:  # every state shows, zero included, for alert rules
        for stale in ("false", "true"):
            WEBHOOK_REGISTRATIONS.labels(state.value, stale).set(0)
    for count in counts:
        WEBHOOK_REGISTRATIONS.labels(count.state.value, str(count.stale).lower()).set(count.count)
    REGISTRATION_EXPIRY.clear()
    for expiry in expiries:
        REGISTRATION_EXPIRY.labels(str(expiry.endpoint_id), expiry.path).set(expiry.seconds)


def _check_metrics_token(expected: str | None, authorization: str) -> None:
    if expected is None:
        return
    scheme, _, token = authorization.partition(" ")
    # Compared in constant time, as bytes: the header may hold any character.
    if scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        return
    raise problem(
        HTTPStatus.UNAUTHORIZED,
        "/metrics needs 'Authorization: Bearer <token>' with the METRICS_TOKEN this process "
        "was started with",
        slug="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="switchyard-metrics"'},
    )


ROUTES = [health, ready, metrics]
