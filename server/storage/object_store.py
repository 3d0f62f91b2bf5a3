"""The object store contract: where published workflow documents are kept outside PostgreSQL.

An `ObjectStore` maps a key (`workflows/42/v3.json`) to bytes. Two backends implement it: a
folder (`server.storage.local`, the default `<data dir>/objects`) and an S3 bucket under an
optional prefix (`server.storage.s3`). `open_object_store(settings)` picks one from
`OBJECT_STORE_URL` and owns its lifetime. Keys are checked here, once, for both backends: a
key is relative, made of non-empty segments that do not start with a dot, printable, and at
most 1024 bytes, so it can never leave the folder or the prefix, and the same key means the
same object on either backend. Any backend failure is an `ObjectStoreError`, an
`UnavailableError`: the caller may retry, and its message names the key and the store but
never a credential.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from config.settings import Settings, SettingsError
from server.errors import NotFoundError, UnavailableError, ValidationError

MAX_KEY_BYTES = 1024  # S3's own limit for a whole key, prefix included
DEFAULT_FOLDER_NAME = "objects"  # under the data directory when OBJECT_STORE_URL is unset


class ObjectStoreError(UnavailableError):
    """The store could not be reached or refused the call; retrying later may succeed."""


class ObjectNotFoundError(NotFoundError):
    """No object is stored under the key."""


class InvalidObjectKeyError(ValidationError):
    """The key could escape the store's folder or prefix, or is not a well-formed name."""


class ObjectStore(Protocol):
    """Bytes by key. `put` replaces an existing object whole; readers never see part of one."""

    async def put(self, key: str, data: bytes, *, content_type: str = "application/json") -> None:
        """Store `data` under `key`, replacing what was there."""

    async def get(self, key: str) -> bytes:
        """The object's bytes; raises `ObjectNotFoundError` when there is none."""

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (as in S3)."""


def check_object_key(key: str) -> str:
    """Return `key` unchanged when it is a safe relative name, else raise `InvalidObjectKeyError`.

    A safe key is non-empty, printable, at most `MAX_KEY_BYTES` in UTF-8, and a `/`-separated
    list of segments, none empty (no leading, trailing or doubled `/`) and none starting with
    `.` (no `.`, `..` or hidden names, which also keeps the folder store's temporary files out of
    the key space).
    """
    problem = _key_problem(key)
    if problem is not None:
        raise InvalidObjectKeyError(f"object key {key[:80]!r} is not allowed: {problem}")
    return key


def _key_problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    if not key.isprintable():
        return "it contains a control character"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"it is longer than {MAX_KEY_BYTES} bytes"
    if key.startswith("/"):
        return "it must be relative (no leading '/')"
    segments = key.split("/")
    if any(segment == "" for segment in segments):
        return "it has an empty segment (a trailing or doubled '/')"
    if any(segment.startswith(".") for segment in segments):
        return "a segment starts with '.' ('..' and hidden names are refused)"
    return None


@asynccontextmanager
async def open_object_store(settings: Settings) -> AsyncIterator[ObjectStore]:
    """Open the store `settings` name and close it on exit.

    `OBJECT_STORE_URL=s3://bucket[/prefix]` opens one S3 client (endpoint `S3_ENDPOINT_URL`,
    region and credentials from the standard AWS chain) for the store's lifetime;
    `file:///absolute/folder` a folder; unset, the folder `<data dir>/objects`.

    Raises:
        SettingsError: the URL is malformed; the message names OBJECT_STORE_URL.
    """
    # Imported here: both backends import this module's errors and key rules, and only an S3
    # configuration should pay for importing aioboto3.
    from server.storage.local import LocalObjectStore
    from server.storage.s3 import S3ObjectStore

    url = settings.object_store_url
    store: LocalObjectStore | S3ObjectStore
    if url is None:
        store = LocalObjectStore(settings.data_path.resolve() / DEFAULT_FOLDER_NAME)
    elif url.startswith("s3://"):
        bucket, prefix = parse_s3_url(url)
        store = S3ObjectStore(bucket=bucket, prefix=prefix, endpoint_url=settings.s3_endpoint_url)
    else:
        store = LocalObjectStore(parse_folder_url(url))
    async with store:
        yield store


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> (`bucket`, `some/prefix`); the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError("OBJECT_STORE_URL: expected s3://bucket[/prefix]")
    prefix = parts.path.strip("/")
    if prefix and _key_problem(prefix) is not None:
        raise SettingsError(
            f"OBJECT_STORE_URL: the prefix {prefix!r} is not allowed: {_key_problem(prefix)}"
        )
    return parts.netloc, prefix


def parse_folder_url(url: str) -> Path:
    """`file:///srv/objects` -> `/srv/objects`; only local, absolute folders are accepted."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query:
        raise SettingsError("OBJECT_STORE_URL: expected file:///absolute/folder (three slashes)")
    path = Path(unquote(parts.path))
    if not path.is_absolute() or ".." in path.parts:
        raise SettingsError("OBJECT_STORE_URL: the folder must be an absolute path without '..'")
    return path
