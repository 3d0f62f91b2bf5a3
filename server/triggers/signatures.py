"""Webhook authentication over the raw request bytes: Standard Webhooks, GitHub, header tokens.

Each `verify_*` function takes the secrets an endpoint accepts (one, or two while a secret is
rotated: a request passes when it matches any of them), the relevant header values and the
body exactly as received, and raises `SignatureError` with a short reason (never a secret or
a presented signature) when the request is not authentic. Every comparison is
`hmac.compare_digest` on bytes, and every secret is tried even after a match, so timing tells
nothing about which secret (or how much of a signature) matched. Pure: no I/O, and the clock
is the `now` argument; only new secrets come from the operating system's CSPRNG.

Standard Webhooks (https://www.standardwebhooks.com): `webhook-signature` holds one or more
space-separated `v1,<base64 HMAC-SHA256>` entries over `<webhook-id>.<webhook-timestamp>.<body>`,
keyed with the base64 part of a `whsec_...` secret; `webhook-timestamp` (Unix seconds) must be
within five minutes of `now`, either way. GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256
of the body>` keyed with the secret's UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Sequence

STANDARD_SECRET_PREFIX = "whsec_"  # noqa: S105 - the public marker of the format
STANDARD_SIGNATURE_VERSION = "v1"
GITHUB_SIGNATURE_PREFIX = "sha256="
TIMESTAMP_TOLERANCE = dt.timedelta(minutes=5)
GENERATED_SECRET_BYTES = 32
MIN_STANDARD_SECRET_BYTES = 16
MAX_STANDARD_SECRET_BYTES = 128
MAX_SIGNATURES = 10  # entries looked at in one webhook-signature header: bounds the work


class SignatureError(Exception):
    """The request is not authentic; the message is a short reason safe to store and log."""


def generate_standard_secret() -> str:
    """A new `whsec_<base64>` secret with 256 random bits."""
    key = secrets.token_bytes(GENERATED_SECRET_BYTES)
    return STANDARD_SECRET_PREFIX + base64.b64encode(key).decode()


def generate_token() -> str:
    """A new random URL-safe token (256 bits) for header-token and GitHub endpoints."""
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


def standard_secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 after `whsec_` (the prefix is
    optional, as in the reference libraries).

    Raises:
        ValueError: not base64, or a key shorter than 16 or longer than 128 bytes; the message
            never includes the secret.
    """
    encoded = secret.removeprefix(STANDARD_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the secret must be whsec_ followed by base64") from None
    if not MIN_STANDARD_SECRET_BYTES <= len(key) <= MAX_STANDARD_SECRET_BYTES:
        raise ValueError(
            f"the secret's key must decode to {MIN_STANDARD_SECRET_BYTES} to "
            f"{MAX_STANDARD_SECRET_BYTES} bytes (24 or 32 random bytes are usual)"
        )
    return key


def standard_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """The `v1,<base64>` signature a sender puts in `webhook-signature`."""
    return f"{STANDARD_SIGNATURE_VERSION},{base64.b64encode(_standard_digest(secret, message_id, timestamp, body)).decode()}"


def verify_standard_webhook(
    secrets: Sequence[str],
    *,
    message_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: dt.datetime,
    tolerance: dt.timedelta = TIMESTAMP_TOLERANCE,
) -> None:
    """Accept a Standard Webhooks request signed with any of `secrets`.

    Raises:
        SignatureError: a header is missing, the timestamp is not an integer or is further
            than `tolerance` from `now` (stale or from the future), or no `v1` entry of the
            signature header matches any secret.
    """
    if not message_id or not timestamp or not signature:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        sent_at = dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise SignatureError("webhook-timestamp is not Unix seconds") from None
    if sent_at < now - tolerance:
        raise SignatureError("webhook-timestamp is too old (more than 5 minutes)")
    if sent_at > now + tolerance:
        raise SignatureError("webhook-timestamp is in the future (more than 5 minutes)")
    presented = _standard_entries(signature)
    if not presented:
        raise SignatureError("webhook-signature has no v1 signature")
    expected = [_standard_digest(s, message_id, timestamp, body) for s in secrets]
    if not _any_match(presented, expected):
        raise SignatureError("webhook-signature does not match")


def github_signature(secret: str, body: bytes) -> str:
    """The `sha256=<hex>` value GitHub puts in `X-Hub-Signature-256`."""
    return GITHUB_SIGNATURE_PREFIX + _github_digest(secret, body).hex()


def verify_github(secrets: Sequence[str], *, signature: str | None, body: bytes) -> None:
    """Accept a GitHub delivery whose `X-Hub-Signature-256` matches any of `secrets`.

    Raises:
        SignatureError: the header is missing or malformed, or matches no secret.
    """
    if not signature:
        raise SignatureError("missing X-Hub-Signature-256 header")
    if not signature.startswith(GITHUB_SIGNATURE_PREFIX):
        raise SignatureError("X-Hub-Signature-256 is not sha256=<hex>")
    try:
        presented = bytes.fromhex(signature.removeprefix(GITHUB_SIGNATURE_PREFIX))
    except ValueError:
        raise SignatureError("X-Hub-Signature-256 is not sha256=<hex>") from None
    if not _any_match([presented], [_github_digest(s, body) for s in secrets]):
        raise SignatureError("X-Hub-Signature-256 does not match")


def verify_token(secrets: Sequence[str], *, presented: str | None, header: str) -> None:
    """Accept a request whose `header` value equals any of `secrets`.

    Both sides are hashed first, so the comparison takes the same time whatever the lengths.

    Raises:
        SignatureError: the header is missing or matches no secret.
    """
    if not presented:
        raise SignatureError(f"missing {header} header")
    digest = hashlib.sha256(presented.encode()).digest()
    if not _any_match([digest], [hashlib.sha256(s.encode()).digest() for s in secrets]):
        raise SignatureError(f"{header} does not match")


def _standard_digest(secret: str, message_id: str, timestamp: str, body: bytes) -> bytes:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return hmac.digest(standard_secret_key(secret), signed, hashlib.sha256)


def _github_digest(secret: str, body: bytes) -> bytes:
    return hmac.digest(secret.encode(), body, hashlib.sha256)


def _standard_entries(header: str) -> list[bytes]:
    """The decoded `v1` signatures of a header; other versions and bad base64 are ignored."""
    decoded: list[bytes] = []
    for entry in header.split()[:MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != STANDARD_SIGNATURE_VERSION:
            continue
        try:
            decoded.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return decoded


def _any_match(presented: Sequence[bytes], expected: Sequence[bytes]) -> bool:
    """Constant-time: every pair is compared, never stopping at the first match."""
    found = False
    for candidate in presented:
        for wanted in expected:
            found |= hmac.compare_digest(candidate, wanted)
    return found
