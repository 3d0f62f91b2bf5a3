"""Stored API tokens (table `api_token`): only the SHA-256 of each token is kept."""

from __future__ import annotations

from server.crypto.tokens import generate_token, hash_token
from server.db.tables import ApiToken


async def create_token(name: str) -> str:
    """Store a new token's hash and return the token itself (the only time it is seen)."""
    token = generate_token()
    await store_token(name, token)
    return token


async def store_token(name: str, token: str) -> None:
    await ApiToken.insert(ApiToken(name=name, token_hash=hash_token(token))).run()


async def is_live_token(token_hash: str) -> bool:
    """True when a stored, unrevoked token has this hash."""
    query = ApiToken.exists().where(
        (ApiToken.token_hash == token_hash) & ApiToken.revoked_at.is_null()
    )
    return bool(await query.run())
