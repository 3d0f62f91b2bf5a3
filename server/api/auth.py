"""Authentication and authorization: one guard for every route of the app.

Every route handler declares the role it needs in `opt["role"]` (`server.access`): on the
handler, or on its controller or router. `authorize`, the app's one guard, lets `public` routes
through; for any other it reads the caller's token (the `Authorization: Bearer` header, or
another reader the app registers in `state.token_readers`, such as the console's session
cookie), resolves it with `authenticate_token` and compares the principal's role with the
route's requirement. A route that declares no role is refused (403): `create_app` also refuses
to build such an app (`routes_without_role`), so this never happens in a running server.

Tokens come from `API_TOKENS` (compared in constant time against their hashes, held in
memory; an entry may be `role:token`, a bare one is an admin) or are stored (`switchyard tokens
create`, `POST /api/v1/tokens`): those are looked up by hash in `api_token` on every request,
so a revoked or expired one is refused at once by every replica (`server.db.tokens`). A missing
or wrong token is a 401 problem detail that says how to get one; the answer never reveals
which tokens exist. A live token whose role does not meet the route's requirement is a 403
naming both roles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any, Final

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.routes import HTTPRoute

from server.access import (
    GRANTED_TO,
    PUBLIC,
    REQUIREMENTS,
    AccessRole,
    Principal,
    configured_token,
    permits,
)
from server.api.deps import pool_of
from server.api.problems import problem
from server.crypto.tokens import find_by_hash, hash_token
from server.db.tokens import live_token

BEARER: Final = "bearer"
PRINCIPAL_KEY: Final = "principal"  # in the request's scope state, once authorized

TokenReader = Callable[[ASGIConnection[Any, Any, Any, Any]], str | None]
"""Finds the token a request presents, or None when this way in carries none."""

ConfiguredTokens = tuple[tuple[str, Principal], ...]
"""`API_TOKENS` as (hash, principal) pairs, held in `state.configured_tokens`."""


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == BEARER and token else None


TOKEN_READERS: Final[tuple[TokenReader, ...]] = (bearer_token,)
"""The default `state.token_readers`: the API's bearer header."""


def configured_principals(entries: Iterable[str]) -> ConfiguredTokens:
    """`API_TOKENS` entries as (hash, principal); each is named by its position, never by
    any part of the token."""
    pairs = []
    for position, entry in enumerate(entries, start=1):
        role, token = configured_token(entry)
        pairs.append(
            (hash_token(token), Principal(token_id=None, name=f"API_TOKENS #{position}", role=role))
        )
    return tuple(pairs)


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Litestar guard: the caller must meet the route's declared role (see the docstring)."""
    requirement = handler.opt.get("role")
    if requirement == PUBLIC:
        return
    if requirement not in REQUIREMENTS:
        raise problem(
            HTTPStatus.FORBIDDEN,
            "this route declares no role, so nobody may call it; declare "
            'opt={"role": ...} on its handler (server.access lists the roles)',
            slug="forbidden",
        )
    token = _presented_token(connection)
    if token is None:
        raise _unauthorized("send 'Authorization: Bearer <token>'")
    principal = await authenticate_token(connection.app.state, token)
    if principal is None:
        raise _unauthorized("the bearer token is not valid, revoked or expired")
    if not permits(principal, requirement):
        granted = ", ".join(sorted(GRANTED_TO[requirement]))
        raise problem(
            HTTPStatus.FORBIDDEN,
            f"this token's role ({principal.role}) may not {connection.scope.get('method', '')} "
            f"{connection.url.path}: it needs the {requirement} permission ({granted}); ask an "
            "admin for a token with one of those roles",
            slug="forbidden",
        )
    connection.scope.setdefault("state", {})[PRINCIPAL_KEY] = principal


async def authenticate_token(state: State, token: str) -> Principal | None:
    """Who `token` belongs to, if it is live now: one of API_TOKENS, or stored, unrevoked and
    unexpired; None otherwise.

    The one check behind every way in (the API's bearer header, the console's session cookie),
    so a revoked token is refused by all of them at once."""
    token_hash = hash_token(token)
    configured: ConfiguredTokens = state.configured_tokens
    if (found := find_by_hash(token_hash, configured)) is not None:
        return found
    async with pool_of(state).acquire() as database:
        return await live_token(database, token_hash)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The principal `authorize` let through (None on a public route)."""
    principal: Principal | None = connection.scope.get("state", {}).get(PRINCIPAL_KEY)
    return principal


def require_trigger_key(connection: ASGIConnection[Any, Any, Any, Any], trigger_key: str) -> None:
    """Refuse (403) an ingest token held to other trigger keys."""
    principal = principal_of(connection)
    if principal is not None and not principal.may_send(trigger_key):
        allowed = ", ".join(principal.trigger_keys or ())
        raise problem(
            HTTPStatus.FORBIDDEN,
            f"this token may send events to these trigger keys only: {allowed}; "
            f"{trigger_key[:100]!r} is not one of them",
            slug="forbidden",
            extra={"errors": [{"field": "trigger_key", "message": "not allowed for this token"}]},
        )


def required_role(handler: BaseRouteHandler) -> str | None:
    role = handler.opt.get("role")
    return role if isinstance(role, str) else None


def routes_without_role(app: Litestar) -> list[str]:
    """`METHOD path` of every handler whose declared role is missing or unknown."""
    missing = []
    for route in app.routes:
        handlers: Sequence[BaseRouteHandler] = (
            [handler for handler, _ in route.route_handler_map.values()]
            if isinstance(route, HTTPRoute)
            else list(getattr(route, "route_handlers", ()))
        )
        for handler in handlers:
            if required_role(handler) not in REQUIREMENTS:
                methods = ",".join(sorted(getattr(handler, "http_methods", ()) or ("WS",)))
                missing.append(f"{methods} {route.path}")
    return missing


def _presented_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    readers: tuple[TokenReader, ...] = getattr(connection.app.state, "token_readers", TOKEN_READERS)
    for read in readers:
        token = read(connection)
        if token is not None:
            return token
    return None


def _unauthorized(reason: str) -> Exception:
    return problem(
        HTTPStatus.UNAUTHORIZED,
        f"{reason}; tokens come from API_TOKENS or `switchyard tokens create` (or `create-token`)",
        slug="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="switchyard"'},
    )


def declare_options_roles(app: Litestar) -> None:
    """Give Litestar's automatic OPTIONS handlers a role: `public` on a path with a public
    method, else `viewer` (an `Allow` list reveals nothing more than the document does)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        if required_role(handler) in REQUIREMENTS:
            continue  # an OPTIONS handler of our own, or one inheriting its controller's role
        others = [h for h, _ in route.route_handler_map.values() if h is not handler]
        public = any(required_role(other) == PUBLIC for other in others)
        handler.opt["role"] = PUBLIC if public else AccessRole.VIEWER.value
