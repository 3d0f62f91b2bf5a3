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
    token_hash = hash_token(token)
    configured: frozenset[str] = connection.app.state.api_token_hashes
    if matches_any(token_hash, configured):
        return
    async with pool_of(connection.app.state).acquire() as database:
        if await is_live_token(database, token_hash):
            return
    raise _unauthorized("the bearer token is not valid, revoked or expired")


def _unauthorized(reason: str) -> Exception:
    return problem(
        HTTPStatus.UNAUTHORIZED,
        f"{reason}; tokens come from API_TOKENS or `switchyard tokens create` (or `create-token`)",
        slug="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="switchyard"'},
    )
