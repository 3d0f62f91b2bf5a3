"""Webhook endpoint authentication: validated settings, generated secrets, rotation, sealing.

Auth types: `none`; `header_token` (a header, `X-Webhook-Token` unless `header` names another,
must equal the secret); `hmac_sha256` (Standard Webhooks, a `whsec_...` secret); `github`
(`X-Hub-Signature-256`, a secret of 16 characters or more). An endpoint accepts one secret, or two while one
is rotated: `[current, previous]`. Both are stored as one JSON list sealed with AES-256-GCM
bound to the row (`row_binding("webhook_endpoint", id)`), so `switchyard rotate-keys`
re-encrypts them like every other sealed column; the number of secrets is kept, in clear, in
`auth_config.secret_count` so views need no decryption.

Changing an endpoint's auth (`AuthInput` on PATCH), for the same type:
- `secret` (or `generate_secret: true`) makes the new secret current and keeps the previous
  current one valid too, so senders can switch over without a refused delivery;
- `drop_previous_secret: true` stops accepting the previous secret (alone, or together with a
  new secret to replace it at once).
A new type replaces everything: its secret is the one given, or a generated one. A secret
that is generated (on create or change, when none is given for a type that needs one) is
returned once, in `generated_secret`, and never again. Messages never include a secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from server.crypto.aead import Keyring, Sealed, row_binding, seal, unseal
from server.errors import ValidationError
from server.triggers.signatures import generate_standard_secret, generate_token, standard_secret_key

TABLE = "webhook_endpoint"
DEFAULT_TOKEN_HEADER = "X-Webhook-Token"  # noqa: S105 - a header name, not a secret
MIN_TOKEN_LENGTH = 16
MIN_GITHUB_SECRET_LENGTH = 16

HeaderName = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9-]{1,100}$",
        description=f"header_token only: the header holding the token ({DEFAULT_TOKEN_HEADER})",
    ),
]
SecretValue = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=500,
        description=(
            "write-only; hmac_sha256: whsec_<base64>; header_token and github: 16+ characters"
        ),
    ),
]


class AuthType(StrEnum):
    NONE = "none"
    HEADER_TOKEN = "header_token"  # noqa: S105 - an auth type name, not a secret
    HMAC_SHA256 = "hmac_sha256"
    GITHUB = "github"


class AuthInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`auth` of a create or change request; on a change, omitted fields keep their value."""

    type: AuthType | UnsetType = UNSET
    secret: SecretValue | UnsetType = UNSET
    header: HeaderName | UnsetType = UNSET
    generate_secret: bool = False
    drop_previous_secret: bool = False

    def __repr__(self) -> str:
        # The secret must stay out of reprs, tracebacks and logs.
        return f"AuthInput(type={self.type!r}, header={self.header!r}, secret=<redacted>)"


class AuthState(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint's authentication with its secrets in clear: memory only, never answered."""

    type: AuthType
    secrets: tuple[str, ...] = ()  # current first, then the previous one during a rotation
    header: str | None = None

    def __repr__(self) -> str:
        return f"AuthState(type={self.type!r}, header={self.header!r}, secrets=<redacted>)"


class AuthView(msgspec.Struct, frozen=True, kw_only=True):
    """What the API shows of an endpoint's authentication: never a secret."""

    type: AuthType
    has_secret: bool
    has_previous_secret: bool
    header: str | None


def view_of(auth_type: str, auth_config: dict[str, object]) -> AuthView:
    count = auth_config.get("secret_count", 0)
    header = auth_config.get("header")
    return AuthView(
        type=AuthType(auth_type),
        has_secret=isinstance(count, int) and count >= 1,
        has_previous_secret=isinstance(count, int) and count >= 2,
        header=header if isinstance(header, str) else None,
    )


def next_auth(current: AuthState | None, change: AuthInput) -> tuple[AuthState, str | None]:
    """The auth after `change` (a new endpoint when `current` is None) and the secret that
    was generated for it, if any, to show once.

    Raises:
        ValidationError: a field that does not apply to the type, or a malformed secret.
    """
    new_type = change.type if change.type is not UNSET else _type_of(current)
    if change.secret is not UNSET and change.generate_secret:
        raise _invalid("auth.generate_secret", "give either secret or generate_secret, not both")
    if new_type is AuthType.NONE:
        _refuse_fields_for_none(change)
        return AuthState(type=AuthType.NONE), None
    if change.header is not UNSET and new_type is not AuthType.HEADER_TOKEN:
        raise _invalid("auth.header", "only header_token endpoints take a header; remove it")
    same_type = current is not None and current.type is new_type
    header = None
    if new_type is AuthType.HEADER_TOKEN:
        kept = current.header if same_type and current is not None else None
        header = change.header if change.header is not UNSET else kept or DEFAULT_TOKEN_HEADER
    generated = fresh = None
    if change.secret is not UNSET:
        fresh = _checked_secret(new_type, change.secret)
    elif change.generate_secret or not same_type:
        fresh = generated = _generated_secret(new_type)
    known = current.secrets if same_type and current is not None else ()
    secrets = known
    if fresh is not None and (not known or known[0] != fresh):
        secrets = (fresh, *known[:1])  # the new one first; the previous current stays valid
    if change.drop_previous_secret:
        secrets = secrets[:1]
    return AuthState(type=new_type, secrets=secrets, header=header), generated


def stored_auth(row: Mapping[str, Any], keyring: Keyring) -> AuthState:
    """The auth of a `webhook_endpoint` row (id, auth_type, auth_config, secret columns).

    Raises:
        SecretDecryptionError: its secrets cannot be decrypted with this keyring.
    """
    header = row["auth_config"].get("header")
    return AuthState(
        type=AuthType(row["auth_type"]),
        secrets=unseal_secrets(keyring, row["id"], row["secret_key_id"], row["secret_ciphertext"]),
        header=header if isinstance(header, str) else None,
    )


def auth_settings(state: AuthState) -> dict[str, object]:
    """The non-secret auth settings kept in `auth_config`: `secret_count` and `header`."""
    settings: dict[str, object] = {"secret_count": len(state.secrets)}
    if state.header is not None:
        settings["header"] = state.header
    return settings


def seal_secrets(keyring: Keyring, row_id: uuid.UUID, secrets: tuple[str, ...]) -> Sealed | None:
    """The sealed JSON list of `secrets` bound to the row, or None when there are none."""
    if not secrets:
        return None
    return seal(keyring, msgspec.json.encode(list(secrets)), row_binding(TABLE, row_id))


def unseal_secrets(
    keyring: Keyring, row_id: uuid.UUID, key_id: str | None, ciphertext: bytes | None
) -> tuple[str, ...]:
    """The secrets sealed in a row (empty when it has none).

    Raises:
        SecretDecryptionError: the value cannot be decrypted with this keyring.
    """
    if key_id is None or ciphertext is None:
        return ()
    sealed = Sealed(key_id=key_id, ciphertext=ciphertext)
    plaintext = unseal(keyring, sealed, row_binding(TABLE, row_id))
    return tuple(msgspec.json.decode(plaintext, type=list[str]))


def _type_of(current: AuthState | None) -> AuthType:
    return AuthType.NONE if current is None else current.type


def _refuse_fields_for_none(change: AuthInput) -> None:
    if change.secret is not UNSET or change.generate_secret:
        raise _invalid("auth.secret", "auth type none takes no secret; remove it")
    if change.header is not UNSET:
        raise _invalid("auth.header", "only header_token endpoints take a header; remove it")


def _checked_secret(auth_type: AuthType, secret: str) -> str:
    if auth_type is AuthType.HMAC_SHA256:
        try:
            standard_secret_key(secret)
        except ValueError as error:
            raise _invalid("auth.secret", f"{error}; or omit it to have one generated") from None
    elif auth_type is AuthType.HEADER_TOKEN and (
        len(secret) < MIN_TOKEN_LENGTH
        or not (secret.isascii() and secret.isprintable())
        or secret != secret.strip()
    ):
        raise _invalid(
            "auth.secret",
            f"a header token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters "
            "without leading or trailing spaces; or omit it to have one generated",
        )
    elif auth_type is AuthType.GITHUB and len(secret) < MIN_GITHUB_SECRET_LENGTH:
        # A short secret makes the HMAC guessable offline from one signed delivery.
        raise _invalid(
            "auth.secret",
            f"a GitHub webhook secret must be at least {MIN_GITHUB_SECRET_LENGTH} characters; "
            "use a long random value (the same one in GitHub's webhook settings), or omit it "
            "to have one generated",
        )
    return secret


def _generated_secret(auth_type: AuthType) -> str:
    if auth_type is AuthType.HMAC_SHA256:
        return generate_standard_secret()
    return generate_token()


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(
        f"webhook auth is not valid: {field} {message}", [{"field": field, "message": message}]
    )
