"""Every error answer is an RFC 9457 problem detail (`application/problem+json`).

Domain errors (`server.errors`) carry no HTTP knowledge; this module maps each class to a
status, title and `type`. Litestar's own errors (404, 405, 400 on a malformed body) are
converted too, keeping their `extra` (the invalid fields). Anything unexpected becomes a 500
problem with no internals in it, logged with its traceback.

Every problem answer is logged as it leaves (`request_refused` at warning for a 4xx,
`request_failed` at error for a 5xx) with the method, the route template (not the concrete
path, so ids and webhook paths do not fan out), the status and the problem `type` — never the
detail or the body, which may echo what a client sent.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

import asyncpg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from server import errors
from server.db.availability import DATABASE_AWAY_ERRORS
from server.errors import field_error

log = structlog.get_logger(__name__)

PROBLEM_TYPE_BASE = "https://switchyard.dev/problems/"
DATABASE_RETRY_AFTER_SECONDS = 5

# Domain error class -> (status, type slug). Order matters: first match wins.
DOMAIN_ERRORS: list[tuple[type[errors.AppError], HTTPStatus, str]] = [
    (errors.NotFoundError, HTTPStatus.NOT_FOUND, "not-found"),
    (errors.ConflictError, HTTPStatus.CONFLICT, "conflict"),
    (errors.GoneError, HTTPStatus.GONE, "gone"),
    (errors.PreconditionFailedError, HTTPStatus.PRECONDITION_FAILED, "precondition-failed"),
    (errors.ValidationError, HTTPStatus.UNPROCESSABLE_ENTITY, "validation"),
    (errors.UnavailableError, HTTPStatus.SERVICE_UNAVAILABLE, "unavailable"),
]


SERVER_ERROR: Final = 500


class LoggedProblem(ProblemDetailsException):
    """A problem detail that logs itself (route, status, type) when it becomes the answer."""

    def to_response(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        route = request.scope.get("path_template") or "(no route)"
        fields = {"method": request.method, "route": route, "status": self.status_code}
        if self.status_code >= SERVER_ERROR:
            log.error("request_failed", problem_type=self.type_, **fields)
        else:
            log.warning("request_refused", problem_type=self.type_, **fields)
        return super().to_response(request)


def problem(
    status: HTTPStatus,
    detail: str,
    *,
    slug: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemDetailsException:
    """A problem detail with a stable `type`, the status phrase as title and a usable detail."""
    return LoggedProblem(
        status_code=status.value,
        title=status.phrase,
        detail=detail,
        type_=PROBLEM_TYPE_BASE + (slug or status.phrase.lower().replace(" ", "-")),
        extra=extra,
        headers=headers,
    )


def _from_http_exception(error: HTTPException) -> ProblemDetailsException:
    status = HTTPStatus(error.status_code)
    extra = error.extra if isinstance(error.extra, dict) else None
    detail = str(error.detail)
    if isinstance(error.extra, list):
        entries = [_field_entry(item) for item in error.extra]
        extra = {"errors": entries}
        if detail.startswith("Validation failed for ") and entries:
            # Litestar's own parameter validation: say which parameter and what is wrong.
            first = entries[0]
            where = f"{first['source']} parameter" if "source" in first else "field"
            detail = f"invalid {where} {first['field']}: {first['message']}"
    return problem(status, detail, extra=extra, headers=error.headers)


def _field_entry(item: Any) -> Any:
    """Litestar's `{"message", "key", "source"}` in the shape of `field_error`."""
    if isinstance(item, dict) and "key" in item and "field" not in item:
        source = item.get("source")  # a ParamType (a str enum) or a plain string
        return field_error(
            str(item["key"]),
            str(item.get("message", "")),
            source=str(getattr(source, "value", source)) if source else None,
        )
    return item


def _from_domain_error(error: errors.AppError) -> ProblemDetailsException:
    for error_class, status, slug in DOMAIN_ERRORS:
        if isinstance(error, error_class):
            extra: dict[str, Any] | None = None
            if isinstance(error, errors.ValidationError) and error.problems:
                extra = {"errors": error.problems}
            headers = {"Retry-After": "5"} if status is HTTPStatus.SERVICE_UNAVAILABLE else None
            return problem(status, str(error), slug=slug, extra=extra, headers=headers)
    return problem(HTTPStatus.BAD_REQUEST, str(error))


def _from_data_error(error: asyncpg.DataError) -> ProblemDetailsException:
    # PostgreSQL refused a value the API let through (a NUL byte in text, an out-of-range
    # number): the client's input, so a 400, never a 500.
    return problem(
        HTTPStatus.BAD_REQUEST,
        f"a value was refused by the database: {error.__class__.__name__}; "
        "remove NUL characters and keep numbers within range",
    )


def _from_database_away(error: Exception) -> ProblemDetailsException:
    log.warning("database_unavailable", error=f"{type(error).__name__}: {error}")
    return problem(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "the database is not reachable right now; retry after the time in Retry-After",
        slug="unavailable",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def _from_recursion_error(_: RecursionError) -> ProblemDetailsException:
    # msgspec refuses to decode JSON nested deeper than the interpreter's recursion limit.
    return problem(
        HTTPStatus.BAD_REQUEST,
        "the JSON body is nested too deeply; flatten it (a few hundred levels at most)",
    )


# A `{name:type}` segment of a route template.
_PATH_PARAMETER = re.compile(r"\{(\w+):(\w+)\}")
_EXAMPLE_UUID = "3f2b8c1e-5d4a-4e7b-9c0d-1a2b3c4d5e6f"
# Where each kind of id comes from, for the 404 of a path id that is not a UUID.
_ID_SOURCES: Final = {
    "execution_id": "as returned by POST /api/v1/events (`execution_ids`) or "
    "POST /api/v1/workflows/{workflow_id}/run (`execution_id`)",
    "workflow_id": "as returned by POST /api/v1/workflows and listed by GET /api/v1/workflows",
    "event_id": "as returned by POST /api/v1/events (`event_id`) and listed by GET /api/v1/events",
}
_PARSERS: Final[dict[str, Callable[[str], object]]] = {"uuid": uuid.UUID, "int": int}


def not_found_handler(request: Request[Any, Any, Any], error: NotFoundException) -> Response[Any]:
    """404 answers; a path parameter that does not parse (`/executions/123`) is named in it.

    Litestar's router answers a path whose `{id:uuid}` segment is not a UUID with a bare 404
    (it raises NotFoundException from the parser's ValueError); this finds the route the path
    was meant for and says what the parameter looks like.
    """
    if isinstance(error.__cause__, ValueError) and (detail := _malformed_parameter(request)):
        return problem(HTTPStatus.NOT_FOUND, detail, slug="not-found").to_response(request)
    return _from_http_exception(error).to_response(request)


def _malformed_parameter(request: Request[Any, Any, Any]) -> str | None:
    segments = request.url.path.rstrip("/").split("/")
    for route in request.app.routes:
        template = route.path.rstrip("/").split("/")
        if len(template) != len(segments):
            continue
        refused: tuple[str, str] | None = None
        for part, segment in zip(template, segments, strict=True):
            match = _PATH_PARAMETER.fullmatch(part)
            if match is None:
                if part != segment:
                    break
                continue
            name, kind = match.groups()
            if refused is None and not _parses(kind, segment):
                refused = (name, kind)
        else:
            if refused is not None:
                return _describe(*refused)
    return None


def _parses(kind: str, value: str) -> bool:
    parser = _PARSERS.get(kind)
    if parser is None:
        return True
    try:
        parser(value)
    except ValueError:
        return False
    return True


def _describe(name: str, kind: str) -> str:
    if kind == "int":
        return f"no such resource: {name} must be a whole number (1, 2, ...)"
    source = _ID_SOURCES.get(name, "as returned when it was created and listed with its kind")
    what = name.removesuffix("_id").replace("_", " ")
    article = "an" if what[:1] in "aeiou" else "a"
    return (
        f"no such resource: {name} must be a UUID such as {_EXAMPLE_UUID}; "
        f"{article} {what} id is a UUID {source}"
    )


def too_large_handler(request: Request[Any, Any, Any], _: RequestEntityTooLarge) -> Response[Any]:
    """413 answers name the limit and the setting that sets it."""
    limit: int = request.app.state.settings.max_payload_bytes
    return problem(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"the body is larger than {limit} bytes ({_size(limit)}), the limit set by "
        f"MAX_PAYLOAD_BYTES={limit}; send a smaller body or raise MAX_PAYLOAD_BYTES",
    ).to_response(request)


def _size(count: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} B"


def unexpected_error_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.error("request_crashed", path=request.url.path, method=request.method, exc_info=error)
    return problem(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "the server failed to handle this request; it has been logged, retry later",
    ).to_response(request)


ProblemConverter = Callable[[Any], ProblemDetailsException]

PLUGIN = ProblemDetailsPlugin(
    ProblemDetailsConfig(
        enable_for_all_http_exceptions=False,
        exception_to_problem_detail_map={
            HTTPException: _from_http_exception,
            errors.AppError: _from_domain_error,
            asyncpg.DataError: _from_data_error,
            RecursionError: _from_recursion_error,
            **dict.fromkeys(DATABASE_AWAY_ERRORS, _from_database_away),
        },
    )
)

EXCEPTION_HANDLERS = {
    Exception: unexpected_error_handler,
    NotFoundException: not_found_handler,
    RequestEntityTooLarge: too_large_handler,
}
