"""The operator console at `/console` (DESIGN §12): its router, static assets and templates.

Pages are rendered on the server (Jinja templates under `templates/`) and need no build step;
the stylesheet and the one small script under `static/` are served by this server (no CDN).
The router's guard lets a request through only with a live session (`server.console.access`);
its exception handlers turn a missing session into the sign-in page, a missing CSRF token into
a 403 page, and a refused or malformed request into a page that says why (never a 500).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import HTTPException
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_401_UNAUTHORIZED, HTTP_403_FORBIDDEN

from server.api.audit_trail import audit_trail
from server.console.access import (
    CONSOLE_PATH,
    PUBLIC_ROUTE,
    CsrfRefusedError,
    NotSignedInError,
    require_console_session,
    to_sign_in,
)
from server.console.event_pages import EventPages
from server.console.executions import ExecutionPages
from server.console.job_pages import JobPages
from server.console.rendering import add_security_headers, error_page, refused_page, template_config
from server.console.sign_in import SignInController
from server.console.trigger_pages import TriggerPages
from server.console.workflow_pages import WorkflowPages
from server.errors import AppError

STATIC_PATH: Final = f"{CONSOLE_PATH}/static"
STATIC_FOLDER: Final = Path(__file__).parent / "static"
ASSET_MAX_AGE_SECONDS: Final = 3600

__all__ = ["console_assets_router", "console_router", "template_config"]


def console_router() -> Router:
    return Router(
        path=CONSOLE_PATH,
        guards=[require_console_session],
        route_handlers=[
            SignInController, ExecutionPages, WorkflowPages, TriggerPages, JobPages, EventPages,
        ],
        exception_handlers={
            HTTP_401_UNAUTHORIZED: to_sign_in,  # the app's role guard found no live session
            HTTP_403_FORBIDDEN: error_page,  # ... or a role short of the page's: say which
            NotSignedInError: to_sign_in,
            CsrfRefusedError: refused_page,
            AppError: error_page,
            HTTPException: error_page,
        },
        after_request=add_security_headers,
        middleware=[audit_trail],  # the actions declare opt["audit"], as the API's do
        include_in_schema=False,
    )  # fmt: skip


def console_assets_router() -> Router:
    """The stylesheet and script, public (the sign-in page needs them too)."""
    return create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC_FOLDER],
        name="console_assets",
        opt=PUBLIC_ROUTE,
        cache_control=CacheControlHeader(public=True, max_age=ASSET_MAX_AGE_SECONDS),
        include_in_schema=False,
    )
