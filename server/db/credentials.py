"""User credentials (table `user_credentials`): validated, sealed, and write-only.

A credential's data is checked against its type's `fields_schema` (table `credential_type`),
then JSON-encoded and sealed with AES-256-GCM bound to the row id (`server.crypto.aead`); only
the ciphertext and key id are stored. Summaries never carry the data. `load_credential_data`
is the one way back to the plaintext, for actions at run time, and it stays in memory.
Validation problems name the field and the fix but never echo the submitted values, which may
be secrets.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import asyncpg
import msgspec
from jsonschema import Draft202012Validator
from jsonschema import ValidationError as SchemaError
from piccolo.query.methods.select import Select

from server.crypto.aead import Keyring, Sealed, row_binding, seal, unseal
from server.db.tables import CredentialType, UserCredentials
from server.errors import ConflictError, NotFoundError, ValidationError

TABLE = "user_credentials"
MAX_DATA_BYTES = 64 * 1024
TYPES_HINT = "GET /api/v1/registry/credential-types lists the types and their fields"


class CredentialSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What the API shows of a credential: never its data."""

    id: uuid.UUID
    name: str
    type: str
    created_at: dt.datetime
    updated_at: dt.datetime


_SUMMARY_COLUMNS = (
    UserCredentials.id,
    UserCredentials.name,
    UserCredentials.credential_type.as_alias("type"),
    UserCredentials.created_at,
    UserCredentials.updated_at,
)


async def list_credentials(*, limit: int, after_name: str | None) -> list[CredentialSummary]:
    """Credentials by name, `limit` of them, strictly after `after_name` (keyset on the
    unique name index)."""
    query = UserCredentials.select(*_SUMMARY_COLUMNS)
    if after_name is not None:
        query = query.where(UserCredentials.name > after_name)
    rows = await query.order_by(UserCredentials.name).limit(limit).run()
    return [msgspec.convert(row, CredentialSummary) for row in rows]


async def get_credential(credential_id: uuid.UUID) -> CredentialSummary:
    query = UserCredentials.select(*_SUMMARY_COLUMNS).where(UserCredentials.id == credential_id)
    rows = await query.run()
    if not rows:
        raise NotFoundError(f"credential {credential_id} not found")
    return msgspec.convert(rows[0], CredentialSummary)


async def create_credential(
    *, name: str, type_key: str, data: Mapping[str, object], keyring: Keyring
) -> CredentialSummary:
    """Validate `data` against the type's fields, seal it to a new row, return the summary.

    Raises:
        ValidationError: unknown type, or data that does not fit its schema (every problem).
        ConflictError: a credential with this name exists.
    """
    await _check_data(type_key, data)
    plaintext = msgspec.json.encode(data)
    if len(plaintext) > MAX_DATA_BYTES:
        raise ValidationError(
            "credential data is too large",
            [{"field": "data", "message": f"must encode to at most {MAX_DATA_BYTES} bytes"}],
        )
    row_id = uuid.uuid4()
    sealed = seal(keyring, plaintext, row_binding(TABLE, row_id))
    row = UserCredentials(
        id=row_id,
        name=name,
        credential_type=type_key,
        ciphertext=sealed.ciphertext,
        key_id=sealed.key_id,
    )
    try:
        await UserCredentials.insert(row).run()
    except asyncpg.UniqueViolationError:
        raise ConflictError(
            f"a credential named {name!r} already exists; choose another name, or delete it "
            "first to replace it"
        ) from None
    return await get_credential(row_id)


async def delete_credential(credential_id: uuid.UUID) -> None:
    deleted = (
        await UserCredentials.delete()
        .where(UserCredentials.id == credential_id)
        .returning(UserCredentials.id)
        .run()
    )
    if not deleted:
        raise NotFoundError(f"credential {credential_id} not found")


async def load_credential_data(
    name_or_id: str | uuid.UUID, keyring: Keyring, *, expected_type: str | None = None
) -> dict[str, object]:
    """Decrypt a credential's data for an action; keep the result in memory only.

    `name_or_id` is the credential's name (as step cfg names it) or its id.

    Raises:
        NotFoundError: no such credential.
        ValidationError: `expected_type` is given and the credential is of another type.
        SecretDecryptionError: the stored value cannot be decrypted with this keyring.
    """
    row = await _find_sealed(name_or_id)
    if row is None:
        raise NotFoundError(
            f"credential {str(name_or_id)!r} not found; create it with POST /api/v1/credentials"
        )
    if expected_type is not None and row.type != expected_type:
        raise ValidationError(
            f"credential {row.name!r} is of type {row.type!r}; "
            f"this needs a {expected_type!r} credential"
        )
    sealed = Sealed(key_id=row.key_id, ciphertext=row.ciphertext)
    data = msgspec.json.decode(unseal(keyring, sealed, row_binding(TABLE, row.id)))
    if not isinstance(data, dict):
        raise ValidationError(f"credential {row.name!r} does not hold a JSON object")
    return data


class _SealedRow(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    type: str
    key_id: str
    ciphertext: bytes


async def _find_sealed(name_or_id: str | uuid.UUID) -> _SealedRow | None:
    """By name first (how step cfg refers to credentials), then by id."""
    if isinstance(name_or_id, str):
        rows = await _select_sealed().where(UserCredentials.name == name_or_id).run()
        if rows:
            return msgspec.convert(rows[0], _SealedRow)
        try:
            name_or_id = uuid.UUID(name_or_id)
        except ValueError:
            return None
    rows = await _select_sealed().where(UserCredentials.id == name_or_id).run()
    return msgspec.convert(rows[0], _SealedRow) if rows else None


def _select_sealed() -> Select[UserCredentials]:
    # A new query each time: Piccolo's where() adds to the query it is called on.
    return UserCredentials.select(
        UserCredentials.id,
        UserCredentials.name,
        UserCredentials.credential_type.as_alias("type"),
        UserCredentials.key_id,
        UserCredentials.ciphertext,
    )


async def _check_data(type_key: str, data: Mapping[str, object]) -> None:
    rows = (
        await CredentialType.select(CredentialType.fields_schema)
        .where(CredentialType.type_key == type_key)
        .output(load_json=True)
        .run()
    )
    if not rows:
        known = (
            await CredentialType.select(CredentialType.type_key)
            .order_by(CredentialType.type_key)
            .run()
        )
        names = ", ".join(row["type_key"] for row in known)
        raise ValidationError(
            f"unknown credential type {type_key!r}",
            [{"field": "type", "message": f"unknown type; use one of: {names} ({TYPES_HINT})"}],
        )
    validator = Draft202012Validator(rows[0]["fields_schema"])
    problems = {
        (field, message): None
        for error in validator.iter_errors(dict(data))
        for field, message in _describe(error)
    }
    if problems:
        raise ValidationError(
            f"data does not fit a {type_key!r} credential; fix each field listed in errors",
            [{"field": field, "message": message} for field, message in problems],
        )


def _describe(error: SchemaError) -> Iterator[tuple[str, str]]:
    """(field path, what to do) for one schema error, without the submitted value."""
    where = "data" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    )
    instance = error.instance if isinstance(error.instance, dict) else {}
    subschema = error.schema if isinstance(error.schema, Mapping) else {}  # the one refusing
    rule = str(error.validator)
    expected: Any = error.validator_value
    if rule == "required":
        for name in expected:
            if name not in instance:
                yield f"{where}.{name}", f"is required; add it ({TYPES_HINT})"
    elif rule == "additionalProperties":
        allowed = sorted(subschema.get("properties", {}))
        for name in instance:
            if name not in allowed:
                yield (
                    f"{where}.{name}",
                    f"is not a field of this type; allowed: {', '.join(allowed)}",
                )
    elif rule == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        yield where, f"must be of type {' or '.join(map(str, kinds))}"
    elif rule == "enum":
        yield where, f"must be one of: {', '.join(json.dumps(choice) for choice in expected)}"
    elif rule in _BOUNDS:
        yield where, f"{_BOUNDS[rule]} {expected}"
    else:
        yield where, f"does not satisfy the {rule!r} rule of the type's schema ({TYPES_HINT})"


_BOUNDS = {
    "minimum": "must be at least",
    "maximum": "must be at most",
    "exclusiveMinimum": "must be greater than",
    "exclusiveMaximum": "must be less than",
    "minLength": "must have at least this many characters:",
    "maxLength": "must have at most this many characters:",
    "minItems": "must have at least this many items:",
    "maxItems": "must have at most this many items:",
}


async def credential_type_of(name_or_id: str) -> str | None:
    """The type of the credential named (or with the id) `name_or_id`, None if there is none;
    nothing is decrypted."""
    row = await _find_sealed(name_or_id)
    return None if row is None else row.type
