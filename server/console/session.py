"""The console's session: the API token a person signed in with, sealed into a cookie.

Why a sealed cookie and not a session table: the token is encrypted and authenticated with the
server's keyring (AES-256-GCM, `server.crypto.aead`, under associated data of its own), so the
browser holds only ciphertext, every api replica can open it (they share the keys as they share
the database), a key rotation keeps working sessions working (any key of the keyring opens),
and no table, migration or pruning job is needed. Revocation is not weakened by this: the
token inside is re-checked with `server.api.auth.authenticate_token` on every console request,
the very check the REST API's bearer guard makes, so revoking or expiring the token ends every
session made from it at once. A cookie also stops working after `SESSION_MAX_AGE` (its issue
time is sealed inside), and sign-out deletes it. The cookie is HttpOnly, SameSite=Strict,
scoped to `/console`, and Secure when PUBLIC_URL is https.

Each session carries a random CSRF token; every state-changing console form sends it back in
the `csrf_token` field and the console refuses a POST whose field does not match the sealed one
(`check_csrf`). The token is not derivable from the cookie by a page on another site, which
cannot read the cookie either.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import secrets
from typing import Final

import msgspec

from server.crypto.aead import Keyring, Sealed, SecretDecryptionError, seal, unseal

COOKIE_NAME: Final = "switchyard_console"
COOKIE_PATH: Final = "/console"
CSRF_FIELD: Final = "csrf_token"
SESSION_MAX_AGE: Final = dt.timedelta(hours=12)
SESSION_BINDING: Final = b"switchyard-console-session:v1"
CSRF_TOKEN_BYTES: Final = 24


class Session(msgspec.Struct, frozen=True, kw_only=True):
    token: str
    csrf: str
    issued_at: dt.datetime

    def __repr__(self) -> str:  # never show the token, even in a traceback
        return f"Session(issued_at={self.issued_at.isoformat()})"


def new_session(token: str, now: dt.datetime) -> Session:
    return Session(token=token, csrf=secrets.token_urlsafe(CSRF_TOKEN_BYTES), issued_at=now)


def seal_session(keyring: Keyring, session: Session) -> str:
    """The cookie value: `<key id>.<base64url ciphertext>`."""
    sealed = seal(keyring, msgspec.json.encode(session), SESSION_BINDING)
    return f"{sealed.key_id}.{base64.urlsafe_b64encode(sealed.ciphertext).decode()}"


def open_session(keyring: Keyring, value: str | None, now: dt.datetime) -> Session | None:
    """The session in a cookie value, or None when it is missing, altered, sealed with a key
    this server does not have, or older than `SESSION_MAX_AGE`."""
    if not value:
        return None
    key_id, _, encoded = value.partition(".")
    try:
        ciphertext = base64.urlsafe_b64decode(encoded.encode())
        plaintext = unseal(keyring, Sealed(key_id=key_id, ciphertext=ciphertext), SESSION_BINDING)
        session = msgspec.json.decode(plaintext, type=Session)
    except (binascii.Error, ValueError, SecretDecryptionError, msgspec.DecodeError):
        return None
    if not dt.timedelta(0) <= now - session.issued_at <= SESSION_MAX_AGE:
        return None
    return session


def check_csrf(session: Session, sent: object) -> bool:
    """Whether a form's `csrf_token` field is this session's (compared in constant time)."""
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), session.csrf.encode())
