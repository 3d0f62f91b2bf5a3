"""Resume tokens: the capability in a `wait_for_event` step's resume URL (`/hooks/resume/{token}`).

A token names one step of one execution and proves that this server issued it:
`<execution id>.<step key>.<mac>`, where the MAC is HMAC-SHA256 over a fixed label, the
execution id's 16 bytes and the step key, base64url without padding (43 characters). Every part
is URL-safe and neither an execution id nor a step key holds a `.`, so the token needs no
escaping and is verified without a lookup. The MAC key is derived from the encryption keyring
(`Keyring.derived_keys(PURPOSE)`): the primary key signs and every key verifies, so rotating
ENCRYPTION_KEYS keeps the links already sent working while the old key stays in the ring.

A token carries no expiry and no use count: whether it still works is the step's state (it is
used once when the step resumes; `server.runs.wait_resumes`). Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Sequence
from typing import Final

import msgspec

PURPOSE: Final = b"switchyard resume-url signing v1"
_LABEL: Final = b"switchyard resume\x00"
MAX_TOKEN_LENGTH: Final = 200
_PARTS: Final = 3  # execution id, step key, mac
_MAC_LENGTH: Final = 43  # base64url of 32 bytes, unpadded
_STEP_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")


class ResumeTarget(msgspec.Struct, frozen=True, kw_only=True):
    """What a valid token names."""

    execution_id: uuid.UUID
    step_key: str


class ResumeTokens:
    """Signs and verifies resume tokens with keys derived from the keyring (primary first).

    Deliberately not a Struct: it holds key material, and its repr shows none.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        """Raises ValueError without keys."""
        if not keys:
            raise ValueError("resume tokens need at least one key")
        self._keys = tuple(keys)

    def __repr__(self) -> str:
        return f"ResumeTokens(keys={len(self._keys)})"

    def sign(self, execution_id: uuid.UUID, step_key: str) -> str:
        """The token of `step_key` of execution `execution_id`.

        Raises:
            ValueError: `step_key` is not a step key.
        """
        if not _STEP_KEY.match(step_key):
            raise ValueError(f"{step_key!r} is not a step key")
        mac = _mac(self._keys[0], execution_id, step_key)
        return f"{execution_id}.{step_key}.{mac}"

    def verify(self, token: str) -> ResumeTarget | None:
        """What `token` names, or None when it is malformed or not signed by any key."""
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        parts = token.split(".")
        if len(parts) != _PARTS:
            return None
        execution_text, step_key, mac = parts
        if not _STEP_KEY.match(step_key) or len(mac) != _MAC_LENGTH:
            return None
        try:
            execution_id = uuid.UUID(execution_text)
            given = base64.urlsafe_b64decode(mac + "=")
        except (ValueError, binascii.Error):
            return None
        found = False
        for key in self._keys:  # every key, without stopping early
            expected = base64.urlsafe_b64decode(_mac(key, execution_id, step_key) + "=")
            found |= hmac.compare_digest(given, expected)
        return ResumeTarget(execution_id=execution_id, step_key=step_key) if found else None


def _mac(key: bytes, execution_id: uuid.UUID, step_key: str) -> str:
    digest = hmac.new(key, _LABEL + execution_id.bytes + step_key.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
