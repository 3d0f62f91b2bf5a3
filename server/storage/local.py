"""The folder object store: one file per key under a root folder, the default backend.

A key's `/`-separated segments become sub-folders, so `workflows/42/v3.json` is the file
`<root>/workflows/42/v3.json`. A write goes to a temporary file in the target's folder, is
flushed to disk, renamed over the target with `os.replace` (atomic on POSIX), and the folder is
flushed too, so a reader sees the old object or the new one, never part of one, and a crash
leaves no half-written object. Temporary names start with a dot, which no key segment may, so
they never collide with an object. Files are created with mode 0600: the data directory is the
server's own. The content type is not kept (the folder has nowhere to put it). Deleting leaves
emptied sub-folders in place, so a concurrent write into the same folder cannot lose its
parent. Blocking file calls run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from types import TracebackType

from server.storage.object_store import ObjectNotFoundError, ObjectStoreError, check_object_key

# Errors that mean "no object under this key": the file is missing, a parent segment is a file
# (`a/b` when `a` is an object), or the key names a folder (`a` when only `a/b` exists).
_MISSING_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


class LocalObjectStore:
    """Objects as files under `root` (an absolute folder, created on open)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def __repr__(self) -> str:
        return f"folder {self._root}"

    async def __aenter__(self) -> LocalObjectStore:
        try:
            await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
        except OSError as error:
            raise ObjectStoreError(
                f"object store {self!r}: cannot create the folder: {error.strerror}; "
                "check OBJECT_STORE_URL or --data-dir and the folder's permissions"
            ) from error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None  # nothing is held open between calls

    async def put(self, key: str, data: bytes, *, content_type: str = "application/json") -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(_write_atomically, self._root, path, data)
        except OSError as error:
            raise self._error("write", key, error) from error

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except _MISSING_ERRORS as error:
            raise ObjectNotFoundError(f"object {key!r} not found in {self!r}") from error
        except OSError as error:
            raise self._error("read", key, error) from error

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.is_file)
        except OSError as error:
            raise self._error("check", key, error) from error

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(_remove, path)
        except OSError as error:
            raise self._error("delete", key, error) from error

    def _path(self, key: str) -> Path:
        # check_object_key refuses '..', '.', empty and absolute segments, so the joined path
        # always stays under the root.
        return self._root.joinpath(*check_object_key(key).split("/"))

    def _error(self, action: str, key: str, error: OSError) -> ObjectStoreError:
        reason = error.strerror or type(error).__name__
        return ObjectStoreError(f"object store {self!r}: could not {action} {key!r}: {reason}")


def _write_atomically(root: Path, path: Path, data: bytes) -> None:
    """Write `data` to `path` so that it is never seen partly written, even after a crash."""
    _make_folders(root, path.parent)
    descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as temporary:
            temporary.write(data)
            temporary.flush()
            os.fsync(temporary.fileno())
        os.replace(temporary_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary_name)
        raise
    # The rename lives in the folder's entry list: flush it, or a crash may undo the rename.
    _fsync_folder(path.parent)


def _make_folders(root: Path, folder: Path) -> None:
    """Create `folder` and its missing parents below `root`, flushing each new entry."""
    missing: list[Path] = []
    current = folder
    while current != root and not current.is_dir():
        missing.append(current)
        current = current.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another writer made it first
            created.mkdir()
        _fsync_folder(created.parent)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except _MISSING_ERRORS:
        return  # nothing stored under the key: deleting is idempotent, as in S3
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
