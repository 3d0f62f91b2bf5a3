"""Domain errors. No HTTP here: `server.api.problems` maps each class to a problem detail."""

from __future__ import annotations


class AppError(Exception):
    """Base of every error Switchyard raises on purpose; the message tells a person what to do."""


class NotFoundError(AppError, LookupError):
    """The named object does not exist (`workflow 42 not found`)."""


class ConflictError(AppError):
    """The request contradicts the current state (an edit of a published version)."""


class GoneError(AppError):
    """The named object existed but can no longer be used (a resume link used already)."""


class PreconditionFailedError(AppError):
    """A conditional request's precondition (If-Match) no longer holds."""


class ValidationError(AppError, ValueError):
    """Input is well-formed but not acceptable; `problems` lists each one with its location."""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class UnavailableError(AppError):
    """A dependency (database, object store) failed; the request may be retried."""


def field_error(field: str, message: str, *, source: str | None = None) -> dict[str, str]:
    """One entry of a problem's `errors`: the field's path (`steps[0].cfg.url`, `limit`), what
    is wrong with it and, when the request's parsing knows, where it was (`body`, `query`,
    `path`, `header`). Every invalid-field answer, 400 or 422, lists its fields this way."""
    entry = {"field": field, "message": message}
    if source is not None:
        entry["source"] = source
    return entry
