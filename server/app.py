"""The composition root: `create_app(settings)` builds the Litestar app and its lifespan.

The lifespan opens, in order: the database (the embedded server when none is configured), the
one engine pool, the schema (migrations under an advisory lock), the registries, then only the
role loops that are enabled. An `AsyncExitStack` unwinds in reverse, so loops stop before the
pool closes and the pool closes before the embedded server leaves. This is the only module that
imports every role.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.types import ASGIApp
from piccolo.engine.postgres import PostgresEngine

from config.settings import Role, Settings
from server import health, tracing
from server.actions.catalog import ACTIONS, CREDENTIAL_TYPES, TRIGGERS
from server.actions.registry import BUILTIN_ACTIONS
from server.api import docs, problems
from server.api.allow import answer_options_with_every_method
from server.api.auth import (
    TOKEN_READERS,
    authorize,
    configured_principals,
    declare_options_roles,
    routes_without_role,
)
from server.api.hook_cache import EndpointCache, forget_on_writes
from server.api.hooks import HookController
from server.api.openapi import declare_problem_responses
from server.api.openapi_links import link_created_resources, link_named_fields
from server.api.openapi_roles import declare_required_roles
from server.api.openapi_schemas import StructSchemaPlugin, exact_integer_bounds, optional_bodies
from server.api.resume_links import ResumeLinkController
from server.api.routes import api_router
from server.api.traced_intake import traced_intake
from server.console.access import session_token
from server.console.router import console_assets_router, console_router, template_config
from server.crypto.tokens import hash_token
from server.db import tokens
from server.db.database import DatabaseAddresses, database_addresses
from server.db.migrations import migrate, migrated_pool
from server.db.pool import asyncpg_pool, piccolo_database
from server.db.registry import seed_registries
from server.db.trigger_health import IntakeRecorder
from server.keyring import load_keyring
from server.queue.handlers import JobHandler
from server.runs.event_fan_out import EVENT_JOB_KIND, EventFanOut
from server.runs.event_waits import WAIT_TIMEOUT_JOB_KIND
from server.runs.execution_ended import ENDED_JOB_KIND, ExecutionEnded
from server.runs.jobs import STEP_JOB_KIND
from server.runs.step_runner import StepRunner
from server.runs.wait_resumes import WaitTimeout
from server.scheduler import role as scheduler_role
from server.storage.object_store import open_object_store
from server.supervision import CrashHandler, start_supervised
from server.worker import role as worker_role

log = structlog.get_logger(__name__)

LOCAL_TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret


def _ignore_crash(name: str, error: BaseException) -> None:
    """Default crash handler when no process owns the app (tests): the loop already logged."""


def create_app(
    settings: Settings,
    *,
    on_crash: CrashHandler = _ignore_crash,
    announce: Callable[[str], None] = lambda _: None,
) -> Litestar:
    """The app for `settings.roles`; `/api/v1` exists only with the api role.

    Args:
        on_crash: called when a role loop dies; the CLI turns it into a non-zero exit.
        announce: receives lines meant for the person who started the process (the local
            API token on the embedded default); never logged.
    """
    route_handlers: list[object] = [*health.ROUTES, docs.assets_router()]
    endpoint_cache = EndpointCache()
    middleware: list[Callable[[ASGIApp], ASGIApp]] = []
    if Role.API in settings.roles:
        route_handlers.extend((api_router(), HookController, ResumeLinkController))
        route_handlers.extend((console_router(), console_assets_router()))
        middleware.append(forget_on_writes(endpoint_cache))
        if settings.tracing_enabled or tracing.ENABLED:  # off: not even a pass-through layer
            middleware.append(traced_intake)
    app = Litestar(
        route_handlers=route_handlers,  # type: ignore[arg-type]
        lifespan=[partial(lifespan, settings=settings, on_crash=on_crash, announce=announce)],
        plugins=[problems.PLUGIN, StructSchemaPlugin()],
        exception_handlers=problems.EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=docs.openapi_config(),
        state=State(
            {
                "settings": settings,
                "endpoint_cache": endpoint_cache,
                "token_readers": (session_token, *TOKEN_READERS),
                "configured_tokens": configured_principals(settings.api_tokens),
            }
        ),
        guards=[authorize],  # the one check of every route's declared role (server.access)
        middleware=middleware,
        template_config=template_config(),
        request_max_body_size=settings.max_payload_bytes,  # larger bodies answer 413
        logging_config=None,  # server.log configures logging once for the whole process
        debug=False,
    )
    declare_problem_responses(app.openapi_schema)
    exact_integer_bounds(app.openapi_schema)
    link_created_resources(app.openapi_schema)
    link_named_fields(app.openapi_schema)
    optional_bodies(app)
    answer_options_with_every_method(app)
    declare_options_roles(app)
    if undeclared := routes_without_role(app):
        raise RuntimeError(f"routes without a declared role (opt={{'role': ...}}): {undeclared}")
    declare_required_roles(app)
    return app


@asynccontextmanager
async def lifespan(
    app: Litestar,
    *,
    settings: Settings,
    on_crash: CrashHandler,
    announce: Callable[[str], None],
) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        stack.enter_context(exporting_spans(settings))  # stops last: after the roles' spans
        addresses = stack.enter_context(database_addresses(settings))
        dsn = addresses.direct  # the LISTEN connections and session locks
        engine = await stack.enter_async_context(
            prepared_pool(
                addresses, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size
            )
        )
        app.state.database = engine
        app.state.keyring = load_keyring(settings)
        recorder = IntakeRecorder(asyncpg_pool(engine))
        app.state.intake_recorder = recorder
        await stack.enter_async_context(flushing(recorder, on_crash))
        if Role.API in settings.roles:
            app.state.object_store = await stack.enter_async_context(open_object_store(settings))
            await stack.enter_async_context(
                listening(app.state.endpoint_cache, dsn, settings, on_crash)
            )
        if (
            Role.API in settings.roles
            and settings.uses_embedded_postgres
            and not settings.api_tokens
        ):
            announce(f"API token: {await ensure_local_token(settings.data_path)}")
        if Role.WORKER in settings.roles:
            steps = StepRunner(settings, app.state.keyring, BUILTIN_ACTIONS)
            handlers: dict[str, JobHandler] = {
                STEP_JOB_KIND: steps,
                EVENT_JOB_KIND: EventFanOut(recorder),
                ENDED_JOB_KIND: ExecutionEnded(steps),
                WAIT_TIMEOUT_JOB_KIND: WaitTimeout(),
            }
            await stack.enter_async_context(
                worker_role.running(
                    asyncpg_pool(engine), dsn, settings, handlers, on_crash=on_crash
                )
            )
        if Role.SCHEDULER in settings.roles:
            await stack.enter_async_context(
                scheduler_role.running(
                    asyncpg_pool(engine),
                    dsn,
                    settings,
                    recorder,
                    app.state.keyring,
                    on_crash=on_crash,
                )
            )
        log.info("switchyard_started", roles=sorted(settings.roles))
        yield
        log.info("switchyard_stopping")


@contextmanager
def exporting_spans(settings: Settings) -> Iterator[None]:
    """Export spans while the app runs when OTEL_EXPORTER_OTLP_ENDPOINT is set (`server.tracing`);
    on exit, flush what is buffered."""
    started = tracing.start(settings)
    if started:
        log.info("tracing_started")
    try:
        yield
    finally:
        if started:
            tracing.stop()


@asynccontextmanager
async def flushing(recorder: IntakeRecorder, on_crash: CrashHandler) -> AsyncIterator[None]:
    """Flush trigger-health counts while the app runs; the last flush happens on exit, after
    the roles entered later (worker, scheduler) have stopped recording."""
    stop = asyncio.Event()
    task = start_supervised(
        "trigger-health-flush", recorder.run(stop), on_crash=on_crash, stopping=stop.is_set
    )
    try:
        yield
    finally:
        stop.set()
        await task


@asynccontextmanager
async def listening(
    cache: EndpointCache, dsn: str, settings: Settings, on_crash: CrashHandler
) -> AsyncIterator[None]:
    """Keep the webhook endpoint cache honest while the app runs (`server.api.hook_cache`)."""
    stopped = False
    listener = cache.listener(dsn, reconnect_delay_seconds=settings.job_listener_reconnect_seconds)
    task = start_supervised(
        "config-listener", listener.run(), on_crash=on_crash, stopping=lambda: stopped
    )
    try:
        yield
    finally:
        stopped = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        cache.disconnected()


@asynccontextmanager
async def prepared_pool(
    addresses: DatabaseAddresses, *, min_size: int, max_size: int
) -> AsyncIterator[PostgresEngine]:
    """The process's pool (`migrated_pool`) with the registries seeded."""
    async with migrated_pool(addresses, min_size=min_size, max_size=max_size) as engine:
        await seed_registries(ACTIONS, CREDENTIAL_TYPES, TRIGGERS)
        yield engine


async def prepare_database(engine: PostgresEngine) -> None:
    """Bring the schema up to date (under the migration lock) and seed the registries."""
    await migrate(engine)
    await seed_registries(ACTIONS, CREDENTIAL_TYPES, TRIGGERS)


async def ensure_local_token(data_dir: Path) -> str:
    """The embedded default's API token: made once, kept in `<data dir>/api-token` (0600).

    Only for the zero-configuration local setup, where the person running `make run` owns the
    data directory anyway; deployments set API_TOKENS or use `switchyard create-token`.
    """
    path = data_dir / LOCAL_TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if not await tokens.token_stored(hash_token(token)):
            await tokens.store_token("local (make run)", token)
            return token
        async with asyncpg_pool(piccolo_database()).acquire() as connection:
            if await tokens.live_token(connection, hash_token(token)) is not None:
                return token
        path.unlink()  # revoked or expired: make a new one
    token = await tokens.create_token("local (make run)")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    log.info("local_api_token_created", path=str(path))
    return token
