from __future__ import annotations

import base64
import uuid

import pytest

from server.crypto.aead import (
    Keyring,
    Sealed,
    SecretDecryptionError,
    format_key_entry,
    generate_key,
    parse_encryption_keys,
    row_binding,
    seal,
    unseal,
)

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(32, 64))
ROW = row_binding("user_credentials", uuid.UUID(int=1))


def _keyring(*keys: tuple[str, bytes]) -> Keyring:
    return Keyring(list(keys) or [("k1", OLD_KEY)])


def test_sealed_value_opens_with_the_same_row_binding() -> None:
    keyring = _keyring()
    sealed = seal(keyring, b"hunter2", ROW)
    assert sealed.key_id == "k1"
    assert b"hunter2" not in sealed.ciphertext
    assert unseal(keyring, sealed, ROW) == b"hunter2"


def test_each_seal_uses_a_fresh_nonce() -> None:
    keyring = _keyring()
    assert seal(keyring, b"same", ROW).ciphertext != seal(keyring, b"same", ROW).ciphertext


def test_empty_plaintext_round_trips() -> None:
    keyring = _keyring()
    assert unseal(keyring, seal(keyring, b"", ROW), ROW) == b""


@pytest.mark.parametrize("position", [0, 1, 5, 20, -1])
def test_a_flipped_byte_fails_to_unseal(position: int) -> None:
    keyring = _keyring()
    sealed = seal(keyring, b"secret value", ROW)
    altered = bytearray(sealed.ciphertext)
    altered[position] ^= 0x01
    with pytest.raises(SecretDecryptionError):
        unseal(keyring, Sealed(key_id="k1", ciphertext=bytes(altered)), ROW)


def test_a_truncated_ciphertext_fails_to_unseal() -> None:
    keyring = _keyring()
    sealed = seal(keyring, b"secret value", ROW)
    with pytest.raises(SecretDecryptionError, match="truncated"):
        unseal(keyring, Sealed(key_id="k1", ciphertext=sealed.ciphertext[:20]), ROW)


def test_a_ciphertext_moved_to_another_row_fails_to_unseal() -> None:
    keyring = _keyring()
    sealed = seal(keyring, b"secret value", ROW)
    other_row = row_binding("user_credentials", uuid.UUID(int=2))
    other_table = row_binding("workflow_variable", uuid.UUID(int=1))
    for binding in (other_row, other_table):
        with pytest.raises(SecretDecryptionError, match="moved from another row"):
            unseal(keyring, sealed, binding)


def test_an_unknown_key_id_names_the_key_and_the_fix() -> None:
    sealed = seal(_keyring(("old", OLD_KEY)), b"secret value", ROW)
    with pytest.raises(SecretDecryptionError, match=r"'old'.*ENCRYPTION_KEYS") as raised:
        unseal(_keyring(("new", NEW_KEY)), sealed, ROW)
    assert "secret value" not in str(raised.value)


def test_a_different_key_under_the_same_id_fails_to_unseal() -> None:
    sealed = seal(_keyring(("k1", OLD_KEY)), b"secret value", ROW)
    with pytest.raises(SecretDecryptionError):
        unseal(_keyring(("k1", NEW_KEY)), sealed, ROW)


def test_the_primary_seals_and_every_key_unseals() -> None:
    before = _keyring(("old", OLD_KEY))
    sealed_before = seal(before, b"one", ROW)
    rotated = _keyring(("new", NEW_KEY), ("old", OLD_KEY))
    sealed_after = seal(rotated, b"two", ROW)
    assert rotated.primary_key_id == "new"
    assert rotated.key_ids == ("new", "old")
    assert sealed_after.key_id == "new"
    assert unseal(rotated, sealed_before, ROW) == b"one"
    assert unseal(rotated, sealed_after, ROW) == b"two"
    assert unseal(_keyring(("new", NEW_KEY)), sealed_after, ROW) == b"two"


def test_parse_reads_entries_in_order_the_first_being_primary() -> None:
    entries = [format_key_entry("k2026", NEW_KEY), " " + format_key_entry("k2025", OLD_KEY) + " "]
    keyring = parse_encryption_keys(entries)
    assert keyring.key_ids == ("k2026", "k2025")
    sealed = seal(Keyring([("k2025", OLD_KEY)]), b"x", ROW)
    assert unseal(keyring, sealed, ROW) == b"x"


def test_parse_accepts_url_safe_base64_without_padding() -> None:
    encoded = base64.urlsafe_b64encode(b"\xfb" * 32).decode().rstrip("=")
    keyring = parse_encryption_keys([f"k1:{encoded}"])
    sealed = seal(Keyring([("k1", b"\xfb" * 32)]), b"x", ROW)
    assert unseal(keyring, sealed, ROW) == b"x"


SECRET_MATERIAL = base64.b64encode(b"S" * 31).decode()  # 31 bytes: one short


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "no keys given"),
        ([SECRET_MATERIAL], "entry 1: no ':' found"),
        (
            [f"k1:{base64.b64encode(OLD_KEY).decode()}", f"k2:{SECRET_MATERIAL}"],
            "entry 2 .'k2'.: the key decodes to 31 bytes",
        ),
        ([f"k1:{SECRET_MATERIAL}!!"], "entry 1 .'k1'.: the key is not valid base64"),
        ([f"bad id:{base64.b64encode(OLD_KEY).decode()}"], "entry 1: the key id must be"),
        ([f":{base64.b64encode(OLD_KEY).decode()}"], "entry 1: the key id must be"),
        ([format_key_entry("k1", OLD_KEY), format_key_entry("k1", NEW_KEY)], "'k1' appears twice"),
    ],
)
def test_parse_errors_name_the_entry_and_the_format_but_not_the_key(
    entries: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_encryption_keys(entries)
    text = str(raised.value)
    assert "key-id:base64-of-32-bytes" in text or "appears twice" in text
    assert SECRET_MATERIAL not in text
    assert base64.b64encode(OLD_KEY).decode() not in text


def test_keyring_repr_shows_key_ids_only() -> None:
    keyring = _keyring(("k1", OLD_KEY))
    assert repr(keyring) == "Keyring(key_ids=('k1',))"
    assert OLD_KEY.hex() not in repr(keyring)


def test_keyring_refuses_keys_of_the_wrong_size_and_empty_rings() -> None:
    with pytest.raises(ValueError, match="needs 32"):
        Keyring([("k1", b"short")])
    with pytest.raises(ValueError, match="at least one key"):
        Keyring([])


def test_generated_keys_are_random_and_256_bits() -> None:
    first, second = generate_key(), generate_key()
    assert len(first) == 32
    assert first != second
    assert parse_encryption_keys([format_key_entry("fresh", first)]).key_ids == ("fresh",)
