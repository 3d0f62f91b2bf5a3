"""Who may see a console page: the session guard, the CSRF check, and what a refusal shows.

Every console handler declares `opt={"role": ...}` (`viewer` for pages, `operator` for the
actions that change a run or the queue, `public` for signing in and out), the declaration the
app's one role guard (`server.api.auth.authorize`) reads, with the session's token as the
credential (`session_token`, one of the app's token readers); each action also names its audit
action (`opt["audit"]`, `server.api.audit_trail`). This module adds no authorization model of
its own: a request passes when its session's token passes
`server.api.auth.authenticate_token`, the REST API's one check, and its role meets the page's.
A request without a live session is sent to the sign-in page; a state-changing request whose
form lacks the session's CSRF token is refused with a 403 page that says what to do.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final
from urllib.parse import quote, urlsplit

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect

from server.api.auth import authenticate_token
from server.console.session import COOKIE_NAME, CSRF_FIELD, Session, check_csrf, open_session

PUBLIC: Final = "public"
VIEWER: Final = {"role": "viewer"}
OPERATOR: Final = {"role": "operator"}
PUBLIC_ROUTE: Final = {"role": PUBLIC}
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
CONSOLE_PATH: Final = "/console"
LOGIN_PATH: Final = f"{CONSOLE_PATH}/login"


class NotSignedInError(Exception):
    """No session cookie, or one that is altered, too old, or holds a revoked token."""


class CsrfRefusedError(Exception):
    """A state-changing form without this session's CSRF token (or from another site)."""


def session_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token of the console's session cookie, on console paths only: the REST API takes
    bearer tokens alone, so a browser's session cannot be ridden into it from another site."""
    if not connection.scope["path"].startswith(CONSOLE_PATH):
        return None
    session = open_session(
        connection.app.state.keyring, connection.cookies.get(COOKIE_NAME), dt.datetime.now(dt.UTC)
    )
    return None if session is None else session.token


async def current_session(connection: ASGIConnection[Any, Any, Any, Any]) -> Session | None:
    """The request's session if its token is live right now, else None."""
    now = dt.datetime.now(dt.UTC)
    session = open_session(connection.app.state.keyring, connection.cookies.get(COOKIE_NAME), now)
    if session is None or not await authenticate_token(connection.app.state, session.token):
        return None
    return session


async def require_console_session(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Litestar guard of the console router: a live session, and on POST its CSRF token."""
    if handler.opt.get("role") == PUBLIC:
        return
    session = await current_session(connection)
    if session is None:
        raise NotSignedInError
    connection.state.console_session = session
    if connection.scope.get("method", "GET") not in SAFE_METHODS:
        await refuse_without_csrf(connection, session)


async def refuse_without_csrf(
    connection: ASGIConnection[Any, Any, Any, Any], session: Session
) -> None:
    if not isinstance(connection, Request):  # pragma: no cover - console routes are HTTP only
        raise CsrfRefusedError
    form = await connection.form()
    if not check_csrf(session, form.get(CSRF_FIELD)):
        raise CsrfRefusedError


def session_of(request: Request[Any, Any, Any]) -> Session:
    """The session the guard checked (every non-public console handler has one)."""
    session: Session = request.state.console_session
    return session


def from_another_site(request: Request[Any, Any, Any]) -> bool:
    """Whether a browser says this request comes from another site (Sec-Fetch-Site, Origin):
    signing in has no session to hold a CSRF token yet, so a cross-site sign-in is refused on
    these headers, which browsers always send on a cross-site POST."""
    if request.headers.get("sec-fetch-site", "same-origin") not in {"same-origin", "none"}:
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    public_url: str | None = request.app.state.settings.public_url
    if public_url is not None:  # behind a proxy the Host header may differ
        public = urlsplit(public_url)
        if origin == f"{public.scheme}://{public.netloc}":
            return False
    return origin.split("://", 1)[-1] != request.headers.get("host", "")


def to_sign_in(request: Request[Any, Any, Any], _: Exception) -> Redirect:
    """Where a request without a live session goes: the sign-in page, then back here."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    back = target if request.method in SAFE_METHODS else "/console/executions"
    return Redirect(f"{LOGIN_PATH}?next={quote(back, safe='/')}", status_code=303)
