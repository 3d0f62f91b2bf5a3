"""Bearer-token authentication for `/api/v1`.

Tokens come from `API_TOKENS` (compared in constant time against their hashes, held in
memory) or are stored (`switchyard tokens create`, `POST /api/v1/tokens`): those are looked up
by hash in `api_token` on every request, so a revoked or expired one is refused at once by
every replica (`server.db.tokens`). A missing or wrong token is a 401 problem detail that says
how to get one; the answer never reveals which tokens exist.
"""

from __future__ import annotations

from http import HTTPStatus

from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler

from server.api.deps import pool_of
from server.api.problems import problem
from server.crypto.tokens import hash_token, matches_any
from server.db.tokens import is_live_token

BEARER = "bearer"


async def require_api_token(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Litestar guard: let the request through only with a valid bearer token."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER or not token:
        raise _unauthorized("send 'Authorization: Bearer <token>'")
    if not await authenticate_token(connection.app.state, token):
        raise _unauthorized("the bearer token is not valid, revoked or expired")


async def authenticate_token(state: State, token: str) -> bool:
    """Whether `token` is live now: one of API_TOKENS, or stored, unrevoked and unexpired.

    The one check behind every way in (the API's bearer header, the console's session cookie),
    so a revoked token is refused by all of them at once."""
    token_hash = hash_token(token)
    configured: frozenset[str] = state.api_token_hashes
    if matches_any(token_hash, configured):
        return True
    async with pool_of(state).acquire() as database:
        return await is_live_token(database, token_hash)


def _unauthorized(reason: str) -> Exception:
    return problem(
        HTTPStatus.UNAUTHORIZED,
        f"{reason}; tokens come from API_TOKENS or `switchyard tokens create` (or `create-token`)",
        slug="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="switchyard"'},
    )
