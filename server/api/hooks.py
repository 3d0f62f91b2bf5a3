"""`POST /hooks/{path}`: inbound webhooks, outside API auth (each endpoint has its own).

Steps, in order: the endpoint is looked up by path, with its routes (kept per path by
`server.api.hook_cache` and dropped on every change, so a new, changed or disabled endpoint
applies at once on every replica): unknown or disabled -> 404.
The body is read (over MAX_PAYLOAD_BYTES -> 413) and authenticated on its raw bytes (-> 401),
then parsed by content type (`server.triggers.bodies`: JSON, form, or raw as received;
malformed JSON or form -> 400). Every 404 has one body and every 401 has one body, whatever
the cause, so an answer never tells whether a path has a secret or why a signature failed;
the reason goes to the trigger's health (`refused`, `last_error`) for operators. Unknown paths
are counted under the synthetic key `(unknown webhook path)`, which no trigger key can equal.

The delivery id is the event's idempotency key: `webhook-id` (hmac_sha256, also `svix-id`),
`X-GitHub-Delivery` (github), else an `Idempotency-Key` header. A repeated delivery starts
nothing new and answers with the first event (`duplicate: true`).

Answers. `async`: 202 `{"event_id", "execution_ids", "duplicate": false, "outcome"}` once the
event is durable; a replay answers 200 with the first event. `sync`: waits up to the endpoint's
`sync_timeout_seconds` for the first execution the event started, then 200 `{"event_id",
"execution_id", "status", "output", "error", "duplicate"}` (`output`: the `result_data` of the
steps that ended the run, keyed by step key; see `server.db.execution_outcomes`), or 202 with
the async fields plus `execution_id` and `status` if it is still running. A sync event that
started no execution (no subscription, filtered out) answers 202 like async mode.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import asyncpg
import msgspec
import structlog
from litestar import Controller, Request, Response, post
from litestar.datastructures import Headers
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
    ServiceUnavailableException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from server.api.deps import DEPENDENCIES, Injected, Resources
from server.api.hook_cache import EndpointCache
from server.api.problems import problem
from server.crypto.aead import Keyring, SecretDecryptionError
from server.db.execution_outcomes import wait_for_outcome
from server.db.trigger_health import IntakeOutcome, IntakeRecorder
from server.db.webhook_auth import DEFAULT_TOKEN_HEADER, AuthType
from server.db.webhooks import IntakeEndpoint, ResponseMode, find_endpoint
from server.engine.rendering import RenderError
from server.runs.event_waits import render_correlation_key
from server.runs.intake import AcceptedEvent, accept_event
from server.triggers.bodies import BodyError, payload_of
from server.triggers.signatures import (
    SignatureError,
    verify_github,
    verify_standard_webhook,
    verify_token,
)

log = structlog.get_logger(__name__)

HOOKS_PREFIX: Final = "/hooks"
UNKNOWN_PATH_KEY: Final = "(unknown webhook path)"
MAX_DELIVERY_ID_LENGTH = 250  # the event key adds the endpoint id; the column holds 300
NOT_FOUND_DETAIL = "no webhook endpoint accepts requests at this path; check the URL"
UNAUTHORIZED_DETAIL = (
    "the request could not be authenticated; check the endpoint's secret, the signature or "
    "token headers, and the sender's clock"
)


class HookAccepted(msgspec.Struct, frozen=True, kw_only=True):
    event_id: uuid.UUID
    execution_ids: list[uuid.UUID]
    duplicate: bool
    outcome: str


class HookPending(HookAccepted, frozen=True, kw_only=True):
    """Sync mode past its timeout: the execution goes on; poll GET /api/v1/executions/{id}."""

    execution_id: uuid.UUID
    status: str


class HookResult(msgspec.Struct, frozen=True, kw_only=True):
    event_id: uuid.UUID
    execution_id: uuid.UUID
    status: str
    output: dict[str, Any]
    error: str | None
    duplicate: bool


class HookController(Controller):
    path = HOOKS_PREFIX
    opt: Mapping[str, str] = {"role": "public"}
    tags = ("hooks",)
    dependencies = DEPENDENCIES

    @post(
        "/{path:path}",
        status_code=HTTP_202_ACCEPTED,
        summary="Inbound webhook",
        description=__doc__,
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=HookResult,
                description="sync mode: the execution finished; async mode: a replayed "
                "delivery, answered with the first event (HookAccepted, duplicate true)",
            )
        },
        raises=[
            ClientException,
            NotAuthorizedException,
            NotFoundException,
            RequestEntityTooLarge,
            ServiceUnavailableException,
        ],
    )
    async def receive_webhook(
        self,
        path: FromPath[str],
        request: Request[Any, Any, Any],
        resources: Injected[Resources],
    ) -> Response[HookAccepted | HookResult]:
        """Record the delivery as an event of the endpoint's trigger and start its workflows."""
        pool, recorder = resources.pool, resources.recorder
        endpoint = await _endpoint(
            resources.endpoint_cache, recorder, path.strip("/"), resources.keyring
        )
        try:
            body = await request.body()
        except RequestEntityTooLarge:
            _refuse(recorder, endpoint, "body larger than MAX_PAYLOAD_BYTES")
            raise
        try:
            _authenticate(endpoint, request.headers, body, dt.datetime.now(dt.UTC))
        except SignatureError as error:
            _refuse(recorder, endpoint, str(error))
            raise problem(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED_DETAIL) from None
        try:
            payload = payload_of(body, request.headers.get("content-type"))
            delivery_id = _delivery_id(endpoint.auth.type, request.headers)
        except BodyError as error:
            _refuse(recorder, endpoint, str(error)[:200])
            raise problem(HTTPStatus.BAD_REQUEST, str(error)) from None
        accepted = await _accept(pool, recorder, endpoint, payload, delivery_id, request.headers)
        if endpoint.response_mode is ResponseMode.SYNC and accepted.execution_ids:
            return await _sync_answer(pool, endpoint, accepted)
        return Response(
            _accepted(accepted),
            status_code=HTTP_200_OK if accepted.duplicate else HTTP_202_ACCEPTED,
        )


async def _endpoint(
    cache: EndpointCache, recorder: IntakeRecorder, path: str, keyring: Keyring
) -> IntakeEndpoint:
    """The enabled endpoint at `path`; a 404 problem (the same for unknown and disabled)."""
    try:
        endpoint = await cache.endpoint(path, lambda: find_endpoint(path, keyring))
    except SecretDecryptionError as error:
        log.error("webhook_secret_unreadable", path=path, reason=str(error))
        raise problem(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "the webhook cannot be verified right now; retry later",
            headers={"Retry-After": "60"},
        ) from None
    if endpoint is None:
        recorder.record(
            UNKNOWN_PATH_KEY, IntakeOutcome.REFUSED, error=f"no endpoint at {path[:100]!r}"
        )
        raise problem(HTTPStatus.NOT_FOUND, NOT_FOUND_DETAIL)
    if not endpoint.enabled:
        _refuse(recorder, endpoint, "endpoint disabled")
        raise problem(HTTPStatus.NOT_FOUND, NOT_FOUND_DETAIL)
    return endpoint


def _refuse(recorder: IntakeRecorder, endpoint: IntakeEndpoint, reason: str) -> None:
    """Count a refused delivery with its reason (never a secret or a presented signature)."""
    log.info("webhook_refused", path=endpoint.path, trigger_key=endpoint.trigger_key, reason=reason)
    recorder.record(
        endpoint.trigger_key, IntakeOutcome.REFUSED, error=f"webhook {endpoint.path}: {reason}"
    )


def _authenticate(
    endpoint: IntakeEndpoint, headers: Headers, body: bytes, now: dt.datetime
) -> None:
    auth = endpoint.auth
    if auth.type is AuthType.HEADER_TOKEN:
        header = auth.header or DEFAULT_TOKEN_HEADER
        verify_token(auth.secrets, presented=headers.get(header), header=header)
    elif auth.type is AuthType.HMAC_SHA256:
        verify_standard_webhook(
            auth.secrets,
            message_id=_first(headers, "webhook-id", "svix-id"),
            timestamp=_first(headers, "webhook-timestamp", "svix-timestamp"),
            signature=_first(headers, "webhook-signature", "svix-signature"),
            body=body,
            now=now,
        )
    elif auth.type is AuthType.GITHUB:
        verify_github(auth.secrets, signature=headers.get("x-hub-signature-256"), body=body)


def _delivery_id(auth_type: AuthType, headers: Headers) -> str | None:
    """The sender's id of this delivery, which makes a replay a duplicate of the first."""
    if auth_type is AuthType.HMAC_SHA256:
        delivery = _first(headers, "webhook-id", "svix-id")
    elif auth_type is AuthType.GITHUB:
        delivery = _first(headers, "x-github-delivery", "idempotency-key")
    else:
        delivery = headers.get("idempotency-key") or None
    if delivery is not None and len(delivery) > MAX_DELIVERY_ID_LENGTH:
        raise BodyError(f"the delivery id is longer than {MAX_DELIVERY_ID_LENGTH} characters")
    return delivery


def _first(headers: Headers, *names: str) -> str | None:
    return next((value for name in names if (value := headers.get(name))), None)


async def _accept(
    pool: asyncpg.Pool,
    recorder: IntakeRecorder,
    endpoint: IntakeEndpoint,
    payload: Any,
    delivery_id: str | None,
    headers: Headers,
) -> AcceptedEvent:
    source: dict[str, Any] = {
        "via": "webhook",
        "webhook_id": str(endpoint.id),
        "path": endpoint.path,
        "content_type": headers.get("content-type"),
    }
    if github_event := headers.get("x-github-event"):
        source["github_event"] = github_event[:100]
    correlation_key = None
    if endpoint.correlation_key is not None:
        try:
            correlation_key = await render_correlation_key(
                endpoint.correlation_key, {"trigger": payload}, where="correlation_key"
            )
        except RenderError as error:  # accepted all the same: the sender is not to blame
            source["correlation_error"] = str(error)[:500]
    try:
        # One statement writes the event and its executions: no transaction block needed
        # (accept_event opens one itself when a workflow's concurrency limit needs locks).
        async with pool.acquire() as connection:
            accepted: AcceptedEvent = await accept_event(
                connection,
                trigger_key=endpoint.trigger_key,
                trigger_type="webhook",
                payload=payload,
                # Scoped by endpoint: a sender of one endpoint (maybe unauthenticated) can
                # never occupy the delivery ids of another endpoint on the same trigger.
                idempotency_key=f"{endpoint.id}:{delivery_id}" if delivery_id else None,
                source=source,
                routes=endpoint.routes,
                correlation_key=correlation_key,
            )
    except asyncpg.DataError as error:  # e.g. a NUL character, which PostgreSQL refuses
        _refuse(recorder, endpoint, f"payload refused by the database: {type(error).__name__}")
        raise
    outcome = IntakeOutcome.DEDUPLICATED if accepted.duplicate else IntakeOutcome(accepted.outcome)
    recorder.record(endpoint.trigger_key, outcome)
    return accepted


def _accepted(accepted: AcceptedEvent) -> HookAccepted:
    return HookAccepted(
        event_id=accepted.event_id,
        execution_ids=accepted.execution_ids,
        duplicate=accepted.duplicate,
        outcome=IntakeOutcome.DEDUPLICATED.value if accepted.duplicate else accepted.outcome,
    )


async def _sync_answer(
    pool: asyncpg.Pool, endpoint: IntakeEndpoint, accepted: AcceptedEvent
) -> Response[HookAccepted | HookResult]:
    """Wait for the event's first execution: 200 with its output, or 202 when it runs on."""
    outcome = await wait_for_outcome(
        pool, accepted.execution_ids[0], timeout_seconds=endpoint.sync_timeout_seconds
    )
    if not outcome.finished:
        pending = HookPending(
            **msgspec.structs.asdict(_accepted(accepted)),
            execution_id=outcome.execution_id,
            status=outcome.status,
        )
        return Response(pending, status_code=HTTP_202_ACCEPTED)
    result = HookResult(
        event_id=accepted.event_id,
        execution_id=outcome.execution_id,
        status=outcome.status,
        output=outcome.output or {},
        error=outcome.error,
        duplicate=accepted.duplicate,
    )
    return Response(result, status_code=HTTP_200_OK)
