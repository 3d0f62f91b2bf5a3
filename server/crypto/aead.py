"""Authenticated encryption of secrets at rest: AES-256-GCM under a keyring of named keys.

A `Keyring` holds the keys named by `ENCRYPTION_KEYS` (`key-id:base64-of-32-bytes`, comma
separated); the first is the primary, which seals every new value, and all of them unseal, so
keys rotate by putting a new key first and running `switchyard rotate-keys` before the old one
is removed. A sealed value is `Sealed(key_id, ciphertext)`: the key id is stored in its own
column next to the ciphertext, which is one format byte, the random 96-bit nonce, then
AES-GCM's output (ciphertext and 128-bit tag). The associated data binds a ciphertext to the
row that holds it (`row_binding`), so a value copied into another row fails to unseal. Pure:
no I/O and no clock; only the nonce and new keys come from the operating system's CSPRNG.
Nothing here ever puts key material or plaintext into a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import uuid
from collections.abc import Iterator, Sequence

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, GCM's native nonce size
TAG_BYTES = 16  # GCM's full 128-bit authentication tag
FORMAT_VERSION = b"\x01"  # first byte of every ciphertext, so the layout can change later
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # fits key_id varchar(64)
EXPECTED_FORMAT = "key-id:base64-of-32-bytes (for example k2026:<44 base64 characters>)"


class SecretDecryptionError(Exception):
    """A sealed value cannot be opened: unknown key id, altered bytes, or moved to another row."""


class Sealed(msgspec.Struct, frozen=True, kw_only=True):
    """A sealed value as stored: the id of the key that sealed it and the ciphertext."""

    key_id: str
    ciphertext: bytes


class Keyring:
    """Ordered key ids and their 256-bit keys; the first is the primary (it seals).

    Deliberately not a Struct: it holds key material, and its repr shows only the key ids.
    """

    __slots__ = ("_ciphers", "_key_ids", "_keys")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        """Raises ValueError on no keys, a malformed or repeated key id, or a key not 32 bytes."""
        if not keys:
            raise ValueError("a keyring needs at least one key")
        ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys:
            _check_key_id(key_id)
            if key_id in ciphers:
                raise ValueError(f"key id {key_id!r} appears twice; key ids must be unique")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
            ciphers[key_id] = AESGCM(key)
        self._ciphers = ciphers
        self._key_ids = tuple(ciphers)
        self._keys = tuple(key for _, key in keys)

    @property
    def primary_key_id(self) -> str:
        """The id of the key that seals new values."""
        return self._key_ids[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, primary first."""
        return self._key_ids

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._ciphers

    def __iter__(self) -> Iterator[str]:
        return iter(self._key_ids)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={self._key_ids!r})"

    def derived_keys(self, purpose: bytes) -> tuple[bytes, ...]:
        """One 256-bit key per keyring key, primary first, derived for `purpose` with
        HKDF-SHA256: a key for another use (signing resume links) that reveals nothing of the
        encryption keys, and rotates with them."""
        return tuple(
            HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None, info=purpose).derive(key)
            for key in self._keys
        )

    def cipher(self, key_id: str) -> AESGCM:
        """The AES-GCM cipher of `key_id`; raises SecretDecryptionError when it is unknown."""
        try:
            return self._ciphers[key_id]
        except KeyError:
            known = ", ".join(self._key_ids)
            raise SecretDecryptionError(
                f"the value was sealed with key {key_id!r}, which is not configured "
                f"(configured: {known}); add that key back to ENCRYPTION_KEYS"
            ) from None


def generate_key() -> bytes:
    """A new random 256-bit key."""
    return secrets.token_bytes(KEY_BYTES)


def format_key_entry(key_id: str, key: bytes) -> str:
    """`key-id:base64`, the form `ENCRYPTION_KEYS` and the local key file use."""
    _check_key_id(key_id)
    return f"{key_id}:{base64.b64encode(key).decode()}"


def parse_encryption_keys(values: Sequence[str], *, source: str = "ENCRYPTION_KEYS") -> Keyring:
    """Build a keyring from `key-id:base64-of-32-bytes` entries, the first being the primary.

    Args:
        source: where the entries came from, named in error messages.

    Raises:
        ValueError: no entries, or an entry that is malformed; the message names the entry by
            position (and key id once it is known) and the expected format, and never
            includes the key material.
    """
    if not values:
        raise ValueError(f"{source}: no keys given; expected {EXPECTED_FORMAT}")
    keys: list[tuple[str, bytes]] = []
    for position, entry in enumerate(values, start=1):
        key_id, key = _parse_entry(f"{source} entry {position}", entry)
        if any(key_id == known for known, _ in keys):
            raise ValueError(f"{source}: key id {key_id!r} appears twice; make key ids unique")
        keys.append((key_id, key))
    return Keyring(keys)


def _parse_entry(where: str, entry: str) -> tuple[str, bytes]:
    key_id, separator, encoded = entry.strip().partition(":")
    if not separator:
        raise ValueError(f"{where}: no ':' found; expected {EXPECTED_FORMAT}")
    if not KEY_ID_PATTERN.match(key_id):
        raise ValueError(
            f"{where}: the key id must be 1-64 letters, digits, '.', '_' or '-' starting with a "
            f"letter or digit; expected {EXPECTED_FORMAT}"
        )
    where = f"{where} ({key_id!r})"
    try:
        key = base64.b64decode(_standard_base64(encoded.strip()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"{where}: the key is not valid base64; expected {EXPECTED_FORMAT}"
        ) from None
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"{where}: the key decodes to {len(key)} bytes, AES-256 needs {KEY_BYTES}; "
            f"expected {EXPECTED_FORMAT}"
        )
    return key_id, key


def _standard_base64(encoded: str) -> str:
    """Accept the URL-safe alphabet and missing padding too (keys pasted from other tools)."""
    normalised = encoded.replace("-", "+").replace("_", "/")
    return normalised + "=" * (-len(normalised) % 4)


def _check_key_id(key_id: str) -> None:
    if not KEY_ID_PATTERN.match(key_id):
        raise ValueError(
            "a key id must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit"
        )


def row_binding(table: str, row_id: uuid.UUID) -> bytes:
    """The associated data that ties a sealed value to its row: `<table>:<row id>`.

    Every sealed column uses it (`user_credentials`, `workflow_variable`, `webhook_endpoint`),
    so a ciphertext copied into another row, or another table, fails to unseal.
    """
    return f"{table}:{row_id}".encode()


def seal(keyring: Keyring, plaintext: bytes, associated_data: bytes) -> Sealed:
    """Encrypt `plaintext` under the primary key with a fresh random nonce.

    Args:
        associated_data: authenticated but not encrypted; the same bytes must be given to
            `unseal` (use `row_binding`).
    """
    key_id = keyring.primary_key_id
    nonce = secrets.token_bytes(NONCE_BYTES)
    encrypted = keyring.cipher(key_id).encrypt(nonce, plaintext, associated_data)
    return Sealed(key_id=key_id, ciphertext=FORMAT_VERSION + nonce + encrypted)


def unseal(keyring: Keyring, sealed: Sealed, associated_data: bytes) -> bytes:
    """Decrypt and authenticate a value sealed by `seal` under any key of the keyring.

    Raises:
        SecretDecryptionError: the key id is not in the keyring, the bytes were altered, the
            value belongs to another row (different associated data), or the format is unknown.
    """
    cipher = keyring.cipher(sealed.key_id)
    data = sealed.ciphertext
    header = len(FORMAT_VERSION) + NONCE_BYTES
    if len(data) < header + TAG_BYTES or not data.startswith(FORMAT_VERSION):
        raise SecretDecryptionError(
            "the sealed value is truncated or in an unknown format; it cannot be decrypted"
        )
    nonce = data[len(FORMAT_VERSION) : header]
    try:
        return cipher.decrypt(nonce, data[header:], associated_data)
    except InvalidTag:
        raise SecretDecryptionError(
            f"the sealed value failed authentication under key {sealed.key_id!r}: it was "
            "altered, moved from another row, or sealed with a different key of the same id"
        ) from None
