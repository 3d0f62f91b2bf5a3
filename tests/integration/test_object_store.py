"""The object store contract, run against both backends: a local folder and S3 (moto server)."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import time
from base64 import b64encode
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from config.settings import Settings, SettingsError
from server.storage.local import LocalObjectStore
from server.storage.object_store import (
    InvalidObjectKeyError,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    open_object_store,
)
from server.storage.s3 import S3CallLimits, S3ObjectStore
from tests.support.s3_server import (
    DUMMY_ACCESS_KEY_ID,
    DUMMY_SECRET_ACCESS_KEY,
    create_bucket,
    delete_bucket,
    s3_client,
)

PREFIX = "tenant-a/documents"
DOCUMENT = b'{"name": "Lead processing", "steps": []}'
# Small limits so that failure tests end in well under a second or two.
FAST_FAILING_LIMITS = S3CallLimits(
    connect_timeout_seconds=0.5, read_timeout_seconds=0.5, max_attempts=2, call_timeout_seconds=5
)


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """Each backend opened through `open_object_store`, the way the server opens it."""
    if request.param == "local":
        async with open_object_store(Settings(object_store_url=tmp_path.as_uri())) as local:
            yield local
        return
    endpoint: str = request.getfixturevalue("s3_server")
    bucket = await create_bucket(endpoint)
    settings = Settings(object_store_url=f"s3://{bucket}/{PREFIX}", s3_endpoint_url=endpoint)
    async with open_object_store(settings) as remote:
        yield remote
    await delete_bucket(endpoint, bucket)


@pytest.fixture
async def s3_bucket(s3_server: str) -> AsyncIterator[str]:
    """A fresh bucket on the moto server, deleted after the test."""
    bucket = await create_bucket(s3_server)
    yield bucket
    await delete_bucket(s3_server, bucket)


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def _silent_endpoint() -> Iterator[str]:
    """An endpoint URL whose socket accepts connections (into its backlog) but never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- the contract, on both backends -----------------------------------------------------------


async def test_get_returns_the_bytes_that_were_put(store: ObjectStore) -> None:
    await store.put("workflows/42/v1.json", DOCUMENT)

    assert await store.get("workflows/42/v1.json") == DOCUMENT


async def test_put_replaces_an_existing_object(store: ObjectStore) -> None:
    await store.put("workflows/42/v1.json", DOCUMENT)
    await store.put("workflows/42/v1.json", b"{}")

    assert await store.get("workflows/42/v1.json") == b"{}"


async def test_keys_may_hold_spaces_and_non_ascii_letters(store: ObjectStore) -> None:
    await store.put("exports/Zürich leads/v1.json", DOCUMENT)

    assert await store.get("exports/Zürich leads/v1.json") == DOCUMENT


async def test_empty_object_round_trips(store: ObjectStore) -> None:
    await store.put("empty.json", b"")

    assert await store.get("empty.json") == b""
    assert await store.exists("empty.json")


async def test_exists_follows_put_and_delete(store: ObjectStore) -> None:
    assert not await store.exists("workflows/7/v1.json")
    await store.put("workflows/7/v1.json", DOCUMENT)
    assert await store.exists("workflows/7/v1.json")

    await store.delete("workflows/7/v1.json")

    assert not await store.exists("workflows/7/v1.json")
    with pytest.raises(ObjectNotFoundError):
        await store.get("workflows/7/v1.json")


async def test_delete_of_a_missing_key_is_not_an_error(store: ObjectStore) -> None:
    await store.delete("workflows/404/v1.json")

    assert not await store.exists("workflows/404/v1.json")


async def test_get_of_a_missing_key_raises_object_not_found_naming_the_key(
    store: ObjectStore,
) -> None:
    with pytest.raises(ObjectNotFoundError, match=r"workflows/404/v1\.json"):
        await store.get("workflows/404/v1.json")


async def test_a_key_below_an_object_or_above_one_is_not_found(store: ObjectStore) -> None:
    await store.put("workflows/1", DOCUMENT)
    await store.put("workflows/2/v1.json", DOCUMENT)

    with pytest.raises(ObjectNotFoundError):
        await store.get("workflows/1/v1.json")
    with pytest.raises(ObjectNotFoundError):
        await store.get("workflows/2")
    assert not await store.exists("workflows/2")
    await store.delete("workflows/2")  # a folder on disk, no object: nothing to delete
    assert await store.get("workflows/2/v1.json") == DOCUMENT


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "a/../../x",
        "/abs",
        "",
        "a//b",
        "a/",
        "./a",
        ".hidden",
        "a/.tmp-file",
        "line\nbreak",
        "nul\x00byte",
        "x" * 1025,
        "é" * 513,  # 1026 bytes in UTF-8
    ],
)
async def test_unsafe_keys_are_refused_by_every_operation(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidObjectKeyError):
        await store.put(key, DOCUMENT)
    with pytest.raises(InvalidObjectKeyError):
        await store.get(key)
    with pytest.raises(InvalidObjectKeyError):
        await store.exists(key)
    with pytest.raises(InvalidObjectKeyError):
        await store.delete(key)


# --- choosing the backend -----------------------------------------------------------------------


async def test_default_store_is_the_objects_folder_in_the_data_dir(tmp_path: Path) -> None:
    async with open_object_store(Settings(data_dir=str(tmp_path))) as store:
        await store.put("workflows/1/v1.json", DOCUMENT)

    assert (tmp_path / "objects" / "workflows" / "1" / "v1.json").read_bytes() == DOCUMENT


@pytest.mark.parametrize(
    "url",
    ["file://relative/folder", "file:///srv/../etc", "s3://bucket/../x", "s3://bucket/a//b"],
)
async def test_malformed_store_urls_are_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(SettingsError, match="OBJECT_STORE_URL"):
        async with open_object_store(Settings(object_store_url=url)):
            pass


# --- the folder backend -------------------------------------------------------------------------


async def test_local_key_of_1024_bytes_is_accepted(tmp_path: Path) -> None:
    key = "/".join(["k" * 200] * 5) + "/" + "k" * 19  # file names are limited to 255 bytes
    assert len(key.encode()) == 1024

    async with LocalObjectStore(tmp_path) as store:
        await store.put(key, DOCUMENT)
        assert await store.get(key) == DOCUMENT


async def test_local_write_never_exposes_a_partial_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "doc.json"
    seen: list[tuple[bytes, list[str]]] = []
    real_fsync = os.fsync

    def fsync_and_look(descriptor: int) -> None:
        seen.append((target.read_bytes(), _names(tmp_path)))
        real_fsync(descriptor)

    async with LocalObjectStore(tmp_path) as store:
        await store.put("doc.json", b"old")
        monkeypatch.setattr(os, "fsync", fsync_and_look)
        await store.put("doc.json", b"new" * 10_000)
        monkeypatch.undo()

    # While the new bytes are flushed, they sit in a temporary file; the object is still whole.
    old_content, names_while_writing = seen[0]
    assert old_content == b"old"
    assert len(names_while_writing) == 2
    assert next(name for name in names_while_writing if name != "doc.json").startswith(".")
    assert target.read_bytes() == b"new" * 10_000
    assert _names(tmp_path) == ["doc.json"]


@pytest.mark.parametrize("failing_call", ["fsync", "replace"])
async def test_local_failed_write_keeps_the_old_object_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: str
) -> None:
    def no_space(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async with LocalObjectStore(tmp_path) as store:
        await store.put("workflows/1/v1.json", b"old")
        monkeypatch.setattr(os, failing_call, no_space)
        with pytest.raises(ObjectStoreError, match=r"workflows/1/v1\.json.*No space left"):
            await store.put("workflows/1/v1.json", b"new")
        monkeypatch.undo()

        assert await store.get("workflows/1/v1.json") == b"old"
    assert _names(tmp_path / "workflows" / "1") == ["v1.json"]


async def test_local_store_cannot_be_opened_on_a_file(tmp_path: Path) -> None:
    (tmp_path / "occupied").write_bytes(b"")

    with pytest.raises(ObjectStoreError, match="cannot create the folder"):
        async with LocalObjectStore(tmp_path / "occupied" / "objects"):
            pass


# --- the S3 backend -----------------------------------------------------------------------------


async def test_s3_objects_land_under_the_prefix_with_their_content_type(
    s3_server: str,
    s3_bucket: str,
) -> None:
    store = S3ObjectStore(bucket=s3_bucket, prefix=f"/{PREFIX}/", endpoint_url=s3_server)
    async with store:
        await store.put("workflows/1/v1.json", DOCUMENT)
        await store.put("notes.txt", b"hello", content_type="text/plain")

    async with s3_client(s3_server) as client:
        listing = await client.list_objects_v2(Bucket=s3_bucket)
        head = await client.head_object(Bucket=s3_bucket, Key=f"{PREFIX}/notes.txt")
    keys = sorted(entry["Key"] for entry in listing.get("Contents", []))
    assert keys == [f"{PREFIX}/notes.txt", f"{PREFIX}/workflows/1/v1.json"]
    assert head["ContentType"] == "text/plain"


async def test_s3_store_sees_nothing_outside_its_prefix(
    s3_server: str,
    s3_bucket: str,
) -> None:
    async with s3_client(s3_server) as client:
        await client.put_object(Bucket=s3_bucket, Key="outside.json", Body=b"{}")

    async with S3ObjectStore(bucket=s3_bucket, prefix=PREFIX, endpoint_url=s3_server) as store:
        assert not await store.exists("outside.json")
        with pytest.raises(ObjectNotFoundError):
            await store.get("outside.json")


async def test_s3_put_sends_the_md5_of_the_body_so_a_damaged_upload_is_refused(
    s3_server: str,
    s3_bucket: str,
) -> None:
    # moto stores the object without checking Content-MD5 (AWS, MinIO and Ceph do check it),
    # so the test checks what is sent.
    session = aioboto3.Session()
    sent: list[dict[str, str]] = []

    def record_headers(request: Any, **_: Any) -> None:
        sent.append({name.lower(): _text(value) for name, value in request.headers.items()})

    session.events.register("before-send.s3.PutObject", record_headers)
    async with S3ObjectStore(bucket=s3_bucket, endpoint_url=s3_server, session=session) as store:
        await store.put("doc.json", DOCUMENT)

    [headers] = sent
    assert (
        headers["content-md5"]
        == b64encode(hashlib.md5(DOCUMENT, usedforsecurity=False).digest()).decode()
    )
    # No aws-chunked trailer checksum: several S3-compatible servers refuse that encoding.
    assert "aws-chunked" not in headers.get("content-encoding", "")
    assert not [name for name in headers if name.startswith("x-amz-checksum-")]


async def test_s3_prefix_counts_towards_the_key_length_limit(
    s3_server: str,
    s3_bucket: str,
) -> None:
    fitting = "k" * (1024 - len(PREFIX) - 1)
    async with S3ObjectStore(bucket=s3_bucket, prefix=PREFIX, endpoint_url=s3_server) as store:
        await store.put(fitting, DOCUMENT)
        assert await store.get(fitting) == DOCUMENT
        with pytest.raises(InvalidObjectKeyError, match="prefix"):
            await store.put(fitting + "k", DOCUMENT)


async def test_s3_missing_bucket_is_a_store_error_naming_the_bucket(
    s3_server: str,
) -> None:
    async with S3ObjectStore(bucket="no-such-bucket", endpoint_url=s3_server) as store:
        with pytest.raises(ObjectStoreError, match=r"s3://no-such-bucket.*NoSuchBucket"):
            await store.put("doc.json", DOCUMENT)
        with pytest.raises(ObjectStoreError, match="NoSuchBucket"):
            await store.get("doc.json")


async def test_s3_unreachable_endpoint_fails_fast_on_every_operation(
    s3_server: str,
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = S3ObjectStore(
        bucket="documents", prefix=PREFIX, endpoint_url=endpoint, limits=FAST_FAILING_LIMITS
    )
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: store.put("workflows/1/v1.json", DOCUMENT),
        lambda: store.get("workflows/1/v1.json"),
        lambda: store.exists("workflows/1/v1.json"),  # never a silent False
        lambda: store.delete("workflows/1/v1.json"),
    ]
    messages: list[str] = []
    async with store:
        for operation in operations:
            started = time.monotonic()
            with pytest.raises(ObjectStoreError) as caught:
                await operation()
            assert time.monotonic() - started < 3.0
            messages.append(str(caught.value))

    for message in messages:
        assert f"s3://documents/{PREFIX}" in message
        assert "workflows/1/v1.json" in message
        assert "cannot connect" in message
        assert DUMMY_ACCESS_KEY_ID not in message
        assert DUMMY_SECRET_ACCESS_KEY not in message


async def test_s3_endpoint_that_never_answers_fails_after_the_configured_attempts(
    s3_server: str,
) -> None:
    session = aioboto3.Session()
    attempts: list[str] = []
    session.events.register("before-send.s3.GetObject", lambda **_: attempts.append("sent"))
    with _silent_endpoint() as endpoint:
        limits = S3CallLimits(read_timeout_seconds=0.3, max_attempts=2, call_timeout_seconds=10)
        store = S3ObjectStore(
            bucket="documents", endpoint_url=endpoint, limits=limits, session=session
        )
        async with store:
            started = time.monotonic()
            with pytest.raises(ObjectStoreError, match=r"no answer within 0\.3 s"):
                await store.get("doc.json")
    assert time.monotonic() - started < 3.0  # two reads of 0.3 s and one back-off under 1 s
    assert attempts == ["sent", "sent"]  # max_attempts counts the first attempt


async def test_s3_call_limit_caps_a_whole_call(
    s3_server: str,
) -> None:
    with _silent_endpoint() as endpoint:
        limits = S3CallLimits(read_timeout_seconds=30, max_attempts=3, call_timeout_seconds=0.5)
        async with S3ObjectStore(bucket="documents", endpoint_url=endpoint, limits=limits) as store:
            started = time.monotonic()
            with pytest.raises(ObjectStoreError, match=r"no answer within 0\.5 s"):
                await store.put("doc.json", DOCUMENT)
    assert time.monotonic() - started < 3.0
