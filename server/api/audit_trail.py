"""The audit trail: one ASGI middleware appends an audit entry for every audited API call.

A route is audited when its handler declares `opt["audit"]`, an action named
`<target type>.<verb>` (`workflow.update`, `execution.cancel`, `token.create`): every route
that changes state declares one (a test enumerates them). For a successful answer (below 400)
the middleware holds the answer back until its entry is written, so a client never sees a
change the log does not show yet: the handler's own transaction has committed by then, and
the entry records who (the principal `authorize` let through: token id, name and role), what
(the action, its target and a summary with no secret: `server.api.audit_summary`), the
request id (the client's `X-Request-ID` when it sent a usable one, else a new one, returned
in the answer's `X-Request-ID` either way) and the source address. A refused call (4xx, 5xx)
changed nothing and is not recorded. A handler may add to the summary with `add_to_audit`,
and name the target it made there (`add_to_audit(request, execution_id=...)`) when its answer
is no JSON (the console's redirects).

If the entry cannot be written (the database went away between the change and the entry),
the answer still goes out, since the change was made; the failure is logged at error with the
action and target, so the gap is visible.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

import asyncpg
import structlog
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from server.api.audit_summary import decode_object, summarize, target_of
from server.api.auth import principal_of
from server.api.deps import pool_of
from server.db.audit import AuditRecord, append_audit_entry

log = structlog.get_logger(__name__)

NOTES_KEY: Final = "audit_notes"
REQUEST_ID_HEADER: Final = "x-request-id"
USABLE_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MIN_REFUSED: Final = 400
MAX_RESULT_BYTES: Final = 65_536  # larger answers are not read for the ids they made


def add_to_audit(connection: ASGIConnection[Any, Any, Any, Any], **notes: Any) -> None:
    """Add `notes` to this call's audit summary (never a secret)."""
    connection.scope.setdefault("state", {}).setdefault(NOTES_KEY, {}).update(notes)


def audit_trail(app: ASGIApp) -> ASGIApp:
    """ASGI middleware (see the module docstring)."""

    async def auditing(scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler") if scope["type"] == ScopeType.HTTP else None
        action = handler.opt.get("audit") if handler is not None else None
        if not isinstance(action, str):
            await app(scope, receive, send)
            return
        request_id = _request_id(scope)
        held: list[Message] = []

        async def send_after_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
                if message["status"] >= MIN_REFUSED:
                    await send(message)
                    return
                held.append(message)
                return
            if not held:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await _record(scope, action, request_id, held)
                for pending in held:
                    await send(pending)
                held.clear()

        await app(scope, receive, send_after_recording)

    return auditing


async def _record(scope: Scope, action: str, request_id: str, answer: list[Message]) -> None:
    body = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
    result = decode_object(body) if len(body) <= MAX_RESULT_BYTES else {}
    path_params: dict[str, object] = dict(scope.get("path_params", {}))
    notes: dict[str, Any] = scope.get("state", {}).get(NOTES_KEY, {})
    target_type, target_id = target_of(action, path_params, {**result, **notes})
    request_body = ScopeState.from_scope(scope).body
    connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
    record = AuditRecord(
        principal=principal_of(connection),
        action=action,
        target_type=target_type,
        target_id=target_id,
        summary=summarize(
            path_params=path_params,
            query=dict(connection.query_params.items()),
            body=request_body if isinstance(request_body, bytes) else b"",
            result=result,
            notes=notes,
        ),
        request_id=request_id,
        source=client[0] if (client := scope.get("client")) else None,
    )
    app: Litestar = scope["app"]
    try:
        async with pool_of(app.state).acquire() as database:
            await append_audit_entry(database, record)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        log.error(
            "audit_append_failed",
            action=action,
            target_type=target_type,
            target_id=target_id,
            request_id=request_id,
            error=repr(error),
        )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            given = value.decode("latin-1")
            if USABLE_REQUEST_ID.match(given):
                return given
    return uuid.uuid4().hex
