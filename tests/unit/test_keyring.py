from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from config.settings import Settings
from server.crypto.aead import (
    Keyring,
    format_key_entry,
    generate_key,
    row_binding,
    seal,
    unseal,
)
from server.keyring import KEY_FILE_NAME, create_key_file, load_keyring, read_key_file

ROW = row_binding("workflow_variable", uuid.UUID(int=7))


def _settings(data_dir: Path, **overrides: object) -> Settings:
    return Settings(data_dir=str(data_dir), **overrides)  # type: ignore[arg-type]


def test_encryption_keys_setting_is_the_keyring_and_no_file_is_written(tmp_path: Path) -> None:
    entries = (format_key_entry("new", generate_key()), format_key_entry("old", generate_key()))
    keyring = load_keyring(_settings(tmp_path, encryption_keys=entries))
    assert keyring.key_ids == ("new", "old")
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_malformed_encryption_keys_stop_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ENCRYPTION_KEYS entry 1"):
        load_keyring(_settings(tmp_path, encryption_keys=("not-a-key",)))


def test_without_keys_a_private_key_file_is_generated_once_and_logged(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # does not exist yet
    with capture_logs() as logs:
        first = load_keyring(_settings(data_dir))
    path = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_text()
    assert content.startswith(f"{first.primary_key_id}:")
    generated = [entry for entry in logs if entry["event"] == "encryption_key_generated"]
    assert len(generated) == 1
    assert generated[0]["path"] == str(path)
    key_material = content.strip().split(":", 1)[1]
    assert all(key_material not in repr(entry) for entry in logs)

    with capture_logs() as later_logs:
        second = load_keyring(_settings(data_dir))
    assert second.key_ids == first.key_ids
    assert not [e for e in later_logs if e["event"] == "encryption_key_generated"]
    assert unseal(second, seal(first, b"kept", ROW), ROW) == b"kept"
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE_NAME]  # no temporary left


def test_an_external_database_without_keys_is_warned_about(tmp_path: Path) -> None:
    settings = _settings(tmp_path, database_url="postgresql://db.example:5432/app")
    with capture_logs() as logs:
        load_keyring(settings)
    warnings = [entry for entry in logs if entry["event"] == "encryption_keys_not_configured"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert "ENCRYPTION_KEYS" in warnings[0]["detail"]


def test_the_embedded_default_is_not_warned_about(tmp_path: Path) -> None:
    with capture_logs() as logs:
        load_keyring(_settings(tmp_path))
    assert not [entry for entry in logs if entry["event"] == "encryption_keys_not_configured"]


def test_a_key_file_may_list_several_keys_primary_first(tmp_path: Path) -> None:
    old_key, new_key = generate_key(), generate_key()
    path = tmp_path / KEY_FILE_NAME
    path.write_text(
        "# rotated on purpose\n"
        f"{format_key_entry('new', new_key)}\n\n"
        f"{format_key_entry('old', old_key)}\n"
    )
    path.chmod(0o600)
    keyring = read_key_file(path)
    assert keyring.key_ids == ("new", "old")
    sealed = seal(Keyring([("old", old_key)]), b"x", ROW)
    assert unseal(keyring, sealed, ROW) == b"x"


def test_a_corrupt_key_file_names_the_file_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text("k1:c2hvcnQ=\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match=f"{path} entry 1 .'k1'.: the key decodes to 5") as raised:
        load_keyring(_settings(tmp_path))
    assert "c2hvcnQ" not in str(raised.value)


def test_an_empty_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text("\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="no keys given"):
        load_keyring(_settings(tmp_path))


def test_a_key_file_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text(format_key_entry("k1", generate_key()) + "\n")
    path.chmod(0o644)
    with capture_logs() as logs:
        read_key_file(path)
    assert [entry["event"] for entry in logs] == ["encryption_key_file_too_open"]
    assert "chmod 600" in logs[0]["detail"]


def test_creating_a_key_file_that_exists_keeps_the_existing_key(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    assert create_key_file(path) is True
    before = path.read_text()
    assert create_key_file(path) is False  # another process got there first
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]


def test_without_create_a_missing_key_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ENCRYPTION_KEYS is not set"):
        load_keyring(_settings(tmp_path), create=False)
    assert not (tmp_path / KEY_FILE_NAME).exists()
    create_key_file(tmp_path / KEY_FILE_NAME)
    assert len(load_keyring(_settings(tmp_path), create=False).key_ids) == 1
