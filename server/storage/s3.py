"""The S3 object store: objects in one bucket under an optional key prefix, through aioboto3.

The store is an async context manager holding one S3 client (and its connection pool) for its
lifetime. The endpoint is `S3_ENDPOINT_URL` when set (MinIO and other S3-compatible servers),
else AWS; region and credentials come from the standard AWS chain (environment, profile,
container or instance role), never from Switchyard's settings. Every call is bounded: botocore
limits each connection attempt, each read and the number of attempts (standard retry mode),
and `asyncio.wait_for` caps a whole call, retries included. A put carries `Content-MD5`, so
the server refuses a body damaged on the way; botocore's newer default checksum (an
`aws-chunked` trailer) is only sent where an operation requires it, because several
S3-compatible servers reject it. Failures become `ObjectStoreError` with a message of our own
naming the store and the key: botocore's texts can carry request details, never repeated.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import aioboto3
import aiohttp
import msgspec
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from server.storage.object_store import (
    MAX_KEY_BYTES,
    InvalidObjectKeyError,
    ObjectNotFoundError,
    ObjectStoreError,
    check_object_key,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

T = TypeVar("T")

# Error codes S3 answers for a missing object: GET says NoSuchKey, HEAD has no body so only 404.
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_CLIENT_ERROR_HINTS = {
    "NoSuchBucket": "create the bucket or correct OBJECT_STORE_URL",
    "AccessDenied": "check the AWS credentials and the bucket policy",
    "InvalidAccessKeyId": "check the AWS credentials",
    "SignatureDoesNotMatch": "check the AWS credentials",
}


class S3CallLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How long S3 calls may take. A call fails after `call_timeout_seconds` at the latest."""

    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 20.0
    max_attempts: int = 3  # the first attempt included (botocore's standard retry mode)
    call_timeout_seconds: float = 60.0  # the whole call: attempts, back-off and body read


class S3ObjectStore:
    """Objects in `bucket` under `prefix/`; use as `async with S3ObjectStore(...) as store`."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        limits: S3CallLimits | None = None,
        session: aioboto3.Session | None = None,
    ) -> None:
        self._bucket = bucket
        self._prefix = check_object_key(prefix.strip("/")) if prefix.strip("/") else ""
        self._endpoint_url = endpoint_url
        self._limits = limits or S3CallLimits()
        self._session = session
        self._client: S3Client | None = None
        self._exit_stack = AsyncExitStack()

    def __repr__(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}".rstrip("/")

    async def __aenter__(self) -> S3ObjectStore:
        session = self._session or aioboto3.Session()
        client = session.client("s3", endpoint_url=self._endpoint_url, config=self._config())
        try:
            self._client = await self._exit_stack.enter_async_context(client)
        except BotoCoreError as error:
            raise ObjectStoreError(
                f"object store {self!r}: cannot open an S3 client: {_describe(error, self._limits)}"
            ) from error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._client = None
        await self._exit_stack.aclose()

    async def put(self, key: str, data: bytes, *, content_type: str = "application/json") -> None:
        digest = hashlib.md5(data, usedforsecurity=False).digest()  # integrity, not secrecy
        request = self._opened().put_object(
            Bucket=self._bucket,
            Key=self._name(key),
            Body=data,
            ContentType=content_type,
            ContentMD5=base64.b64encode(digest).decode("ascii"),
        )
        await self._call("write", key, request)

    async def get(self, key: str) -> bytes:
        return await self._call("read", key, self._read(self._name(key)))

    async def exists(self, key: str) -> bool:
        request = self._opened().head_object(Bucket=self._bucket, Key=self._name(key))
        try:
            await self._call("check", key, request)
        except ObjectNotFoundError:
            return False
        return True

    async def delete(self, key: str) -> None:
        request = self._opened().delete_object(Bucket=self._bucket, Key=self._name(key))
        await self._call("delete", key, request)

    async def _read(self, name: str) -> bytes:
        response = await self._opened().get_object(Bucket=self._bucket, Key=name)
        async with response["Body"] as body:  # returns the connection to the pool
            return await body.read()

    async def _call(self, action: str, key: str, operation: Awaitable[T]) -> T:
        """Await one S3 operation within the call limit; translate its failures."""
        try:
            return await asyncio.wait_for(operation, self._limits.call_timeout_seconds)
        except TimeoutError as error:
            reason = f"no answer within {self._limits.call_timeout_seconds:g} s"
            raise self._error(action, key, reason) from error
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in _MISSING_CODES:
                raise ObjectNotFoundError(f"object {key!r} not found in {self!r}") from error
            raise self._error(action, key, _describe_client_error(error)) from error
        except (BotoCoreError, aiohttp.ClientError, OSError) as error:
            raise self._error(action, key, _describe(error, self._limits)) from error

    def _error(self, action: str, key: str, reason: str) -> ObjectStoreError:
        return ObjectStoreError(f"object store {self!r}: could not {action} {key!r}: {reason}")

    def _name(self, key: str) -> str:
        """The bucket key for `key`: under the prefix, within S3's length limit."""
        check_object_key(key)
        name = f"{self._prefix}/{key}" if self._prefix else key
        if len(name.encode()) > MAX_KEY_BYTES:
            raise InvalidObjectKeyError(
                f"object key {key[:80]!r} is not allowed: with the prefix {self._prefix!r} "
                f"it is longer than {MAX_KEY_BYTES} bytes"
            )
        return name

    def _opened(self) -> S3Client:
        if self._client is None:
            raise RuntimeError(f"object store {self!r} is not open: use it with 'async with'")
        return self._client

    def _config(self) -> AioConfig:
        return AioConfig(
            connect_timeout=self._limits.connect_timeout_seconds,
            read_timeout=self._limits.read_timeout_seconds,
            retries={"total_max_attempts": self._limits.max_attempts, "mode": "standard"},
            request_checksum_calculation="when_required",
        )


def _describe_client_error(error: ClientError) -> str:
    code = error.response.get("Error", {}).get("Code", "unknown error")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    hint = _CLIENT_ERROR_HINTS.get(code)
    return f"{code} (HTTP {status})" + (f"; {hint}" if hint else "")


def _describe(error: Exception, limits: S3CallLimits) -> str:
    """A short reason for a transport or SDK failure, built from its type only."""
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return "no usable AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    if isinstance(error, ReadTimeoutError):
        return f"the S3 endpoint sent no answer within {limits.read_timeout_seconds:g} s"
    if isinstance(error, BotocoreConnectionError | aiohttp.ClientConnectionError):
        return "cannot connect to the S3 endpoint; check S3_ENDPOINT_URL and the network"
    return type(error).__name__
