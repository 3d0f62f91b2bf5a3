"""How console pages are rendered: the Jinja environment, its filters, the page helper, the
security headers every console answer carries, and the pages shown for refusals and errors.

Templates autoescape everything. Pages load nothing from another origin and run no inline
script or style, which the Content-Security-Policy states, so an injected string can neither
run nor phone home.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

from server.errors import AppError, ConflictError, GoneError, NotFoundError, ValidationError

TEMPLATES: Final = Path(__file__).parent / "templates"
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        {"when": when, "duration": duration, "pretty": pretty, "short_id": short_id}
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def when(value: dt.datetime | None) -> str:
    return "—" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(milliseconds: float | None) -> str:
    if milliseconds is None:
        return "—"
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    if milliseconds < 60_000:
        return f"{milliseconds / 1000:.1f} s"
    return f"{milliseconds / 60_000:.1f} min"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def short_id(value: object) -> str:
    return str(value)[:8]


def render(
    request: Request[Any, Any, Any], template: str, *, status: int = 200, **context: Any
) -> Template:
    """A console page: `template` with `context`, the session's CSRF token and the path."""
    session = request.state.get("console_session")
    return Template(
        template_name=template,
        context={"csrf": session.csrf if session else "", "path": request.url.path, **context},
        status_code=status,
        headers=SECURITY_HEADERS,
    )


def add_security_headers(response: Response[Any]) -> Response[Any]:
    """The console router's after_request hook (redirects and refusals included)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def status_of(error: Exception) -> int:
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, GoneError):
        return 410
    if isinstance(error, ValidationError):
        return 422
    if isinstance(error, HTTPException):
        return error.status_code
    return 400


def message_of(error: Exception) -> str:
    """What a person should read about a refused request (never a stack trace)."""
    if isinstance(error, ValidationException) and isinstance(error.extra, list):
        fields = "; ".join(
            f"{item.get('key', 'value')}: {item.get('message', 'is not valid')}"
            for item in error.extra
            if isinstance(item, dict)
        )
        return f"the request is not valid ({fields}); check the address or the form"
    if isinstance(error, HTTPException):
        return str(error.detail)
    return str(error)


def error_page(request: Request[Any, Any, Any], error: Exception) -> Template:
    """The page for a domain error or a malformed request on a console page."""
    return render(
        request, "error.html", status=status_of(error), message=message_of(error), error=error
    )


def refused_page(request: Request[Any, Any, Any], _: Exception) -> Template:
    return render(request, "refused.html", status=403)


HANDLED_ERRORS: Final = (AppError, HTTPException)
