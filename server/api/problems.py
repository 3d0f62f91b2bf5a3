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

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

import asyncpg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from server import errors
from server.db.availability import DATABASE_AWAY_ERRORS

log = structlog.get_logger(__name__)

PROBLEM_TYPE_BASE = "https://switchyard.dev/problems/"
DATABASE_RETRY_AFTER_SECONDS = 5

# Domain error class -> (status, type slug). Order matters: first match wins.
DOMAIN_ERRORS: list[tuple[type[errors.AppError], HTTPStatus, str]] = [
    (errors.NotFoundError, HTTPStatus.NOT_FOUND, "not-found"),
    (errors.ConflictError, HTTPStatus.CONFLICT, "conflict"),
    (errors.PreconditionFailedError, HTTPStatus.PRECONDITION_FAILED, "precondition-failed"),
    (errors.ValidationError, HTTPStatus.UNPROCESSABLE_ENTITY, "validation"),
    (errors.UnavailableError, HTTPStatus.SERVICE_UNAVAILABLE, "unavailable"),
    (errors.NotImplementedYetError, HTTPStatus.NOT_IMPLEMENTED, "not-implemented"),
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
    if isinstance(error.extra, list):
        extra = {"errors": error.extra}
    return problem(status, str(error.detail), extra=extra, headers=error.headers)


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

EXCEPTION_HANDLERS = {Exception: unexpected_error_handler}
