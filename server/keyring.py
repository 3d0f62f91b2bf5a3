"""Where the process's encryption keys come from: `ENCRYPTION_KEYS`, else a local key file.

With `ENCRYPTION_KEYS` set, that is the keyring (first key seals, all unseal). Without it, the
keys are read from `<data dir>/encryption.key` (one `key-id:base64` entry a line, primary first,
`#` comments allowed), which is generated on first start: written to a private temporary file
(O_EXCL, mode 0600), flushed, then hard-linked into place, so a reader never sees a half-written
file and two processes starting together agree on one key. That suits the embedded default;
with an external database every replica must share the same keys, so it is logged as a warning
there. Only paths are logged, never key material.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import structlog

from config.settings import Settings
from server.crypto.aead import Keyring, format_key_entry, generate_key, parse_encryption_keys

log = structlog.get_logger(__name__)

KEY_FILE_NAME = "encryption.key"
KEY_FILE_MODE = 0o600


def load_keyring(settings: Settings, *, create: bool = True) -> Keyring:
    """The keyring for this process.

    Args:
        create: generate the key file when it is missing (the server); operator commands
            pass False, since a new key could decrypt nothing already stored.

    Raises:
        ValueError: `ENCRYPTION_KEYS` or the key file is malformed (the message says which
            entry and the expected format), or there are no keys and `create` is False.
    """
    if settings.encryption_keys:
        return parse_encryption_keys(settings.encryption_keys)
    path = settings.data_path / KEY_FILE_NAME
    if not create and not path.exists():
        raise ValueError(
            f"no encryption keys: ENCRYPTION_KEYS is not set and {path} does not exist; set "
            "ENCRYPTION_KEYS as the server has it, or pass the server's --data-dir"
        )
    if not settings.uses_embedded_postgres:
        log.warning(
            "encryption_keys_not_configured",
            path=str(path),
            detail=(
                "ENCRYPTION_KEYS is not set although the database is external: secrets are "
                "sealed with a key file local to this machine, which other replicas cannot "
                "read; set ENCRYPTION_KEYS to the same keys on every replica"
            ),
        )
    return read_or_create_key_file(path)


def read_or_create_key_file(path: Path) -> Keyring:
    """The keyring in `path`, generating the file with one new key if it does not exist."""
    if not path.exists():
        create_key_file(path)
    return read_key_file(path)


def read_key_file(path: Path) -> Keyring:
    """Parse a key file; warns when group or others may read it."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning(
            "encryption_key_file_too_open",
            path=str(path),
            detail=f"only the owner should read this file: chmod 600 {path}",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file of key-id:base64 lines") from None
    entries = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return parse_encryption_keys(entries, source=str(path))


def create_key_file(path: Path) -> bool:
    """Write a new key to `path` unless it exists; True if this call created it.

    The content is complete before the name appears (temporary file, fsync, hard link), and the
    link fails if another process created `path` first, in which case its key is kept.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    content = format_key_entry(f"local-{secrets.token_hex(4)}", generate_key()) + "\n"
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(path.parent)
    log.warning(
        "encryption_key_generated",
        path=str(path),
        detail="secrets are sealed with this key: back the file up, or set ENCRYPTION_KEYS",
    )
    return True


def _sync_directory(directory: Path) -> None:
    """Make the new directory entry durable (the file's content already is)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
