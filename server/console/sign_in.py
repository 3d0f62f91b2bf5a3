"""Signing in and out of the console: `GET/POST /console/login`, `POST /console/logout`.

A person signs in with an API token (form field `token`); a live token becomes the sealed
session cookie (`server.console.session`). Both forms are public routes (no session needed).
Sign-out carries the session's CSRF token like every other state-changing form.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from litestar import Controller, Request, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from server.api.auth import authenticate_token
from server.console.access import (
    LOGIN_PATH,
    PUBLIC_ROUTE,
    CsrfRefusedError,
    current_session,
    from_another_site,
)
from server.console.rendering import render
from server.console.session import (
    COOKIE_NAME,
    COOKIE_PATH,
    CSRF_FIELD,
    SESSION_MAX_AGE,
    check_csrf,
    new_session,
    seal_session,
)

HOME: Final = "/console/executions"
MAX_TOKEN_CHARS: Final = 512


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if target and target.startswith("/console/") and not target.startswith("//"):
        return target
    return HOME


class SignInController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", opt=PUBLIC_ROUTE)
    async def home(self) -> Redirect:
        return Redirect(HOME, status_code=303)

    @get("/login", opt=PUBLIC_ROUTE)
    async def login_form(
        self,
        request: Request[Any, Any, Any],
        next: FromQuery[str | None] = None,
        signed_out: FromQuery[bool] = False,
    ) -> Template:
        return render(request, "login.html", next=safe_next(next), signed_out=signed_out)

    @post("/login", opt=PUBLIC_ROUTE)
    async def login(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        """Sign in with the form's `token`; a wrong, revoked or expired one shows why."""
        if from_another_site(request):
            raise CsrfRefusedError
        form = await request.form()
        token = form.get("token")
        target = safe_next(form.get("next"))
        if not isinstance(token, str) or not token.strip():
            return render(
                request, "login.html", status=400, next=target,
                problem="Enter an API token (from API_TOKENS or `switchyard tokens create`).",
            )  # fmt: skip
        token = token.strip()
        if len(token) > MAX_TOKEN_CHARS or not await authenticate_token(request.app.state, token):
            return render(
                request, "login.html", status=401, next=target,
                problem="That token is not valid, revoked or expired. Ask an administrator "
                "for a live one (`switchyard tokens create`).",
            )  # fmt: skip
        session = new_session(token, dt.datetime.now(dt.UTC))
        response = Redirect(target, status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            seal_session(request.app.state.keyring, session),
            path=COOKIE_PATH,
            max_age=int(SESSION_MAX_AGE.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )
        return response

    @post("/logout", opt=PUBLIC_ROUTE)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        """Sign out: the cookie is deleted (a signed-in session must send its CSRF token)."""
        session = await current_session(request)
        if session is not None:
            form = await request.form()
            if not check_csrf(session, form.get(CSRF_FIELD)):
                raise CsrfRefusedError
        response = Redirect(f"{LOGIN_PATH}?signed_out=true", status_code=303)
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
        return response


def _secure(request: Request[Any, Any, Any]) -> bool:
    public_url: str | None = request.app.state.settings.public_url
    return public_url is not None and public_url.startswith("https://")
