"""Domain errors. No HTTP here: `server.api.problems` maps each class to a problem detail."""

from __future__ import annotations


class AppError(Exception):
    """Base of every error Switchyard raises on purpose; the message tells a person what to do."""


class NotFoundError(AppError, LookupError):
    """The named object does not exist (`workflow 42 not found`)."""


class ConflictError(AppError):
    """The request contradicts the current state (an edit of a published version)."""


class PreconditionFailedError(AppError):
    """A conditional request's precondition (If-Match) no longer holds."""


class ValidationError(AppError, ValueError):
    """Input is well-formed but not acceptable; `problems` lists each one with its location."""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class UnavailableError(AppError):
    """A dependency (database, object store) failed; the request may be retried."""


class NotImplementedYetError(AppError, NotImplementedError):
    """A contract path whose feature arrives with a later release."""
