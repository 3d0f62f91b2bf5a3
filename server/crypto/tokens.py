"""API bearer tokens: generation and the one-way hash that is stored instead of the token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

TOKEN_PREFIX = "sy_"  # noqa: S105 - a public marker, not a secret
TOKEN_BYTES = 32


def generate_token() -> str:
    """A new random token (256 bits), shown once to the person who asked for it."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """SHA-256 hex digest: tokens are high-entropy, so a fast unsalted hash suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def find_by_hash(token_hash: str, known: Iterable[tuple[str, T]]) -> T | None:
    """The value paired with `token_hash` among `known` (hash, value) pairs, or None; in
    constant time: compares against every known hash, never stops early."""
    found = None
    for known_hash, value in known:
        if hmac.compare_digest(token_hash, known_hash):
            found = value
    return found
