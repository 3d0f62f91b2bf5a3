"""A real S3-compatible server for tests: moto's server mode on a free loopback port.

`s3_server` (session scope) starts `ThreadedMotoServer` on 127.0.0.1, yields its endpoint URL
and stops it at the end of the session. For as long as it runs, the environment holds dummy
AWS credentials and points the AWS config files at nothing, so no test can pick up a real
profile, instance role or key; a test that needs only those credentials (an unreachable
endpoint, say) requests the fixture too. `create_bucket` and `delete_bucket` make and remove a
bucket, and `s3_client` opens a raw client for checks the store API does not offer.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import aioboto3
import pytest
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_s3 import S3Client

DUMMY_ACCESS_KEY_ID = "switchyard-test-access-key"
DUMMY_SECRET_ACCESS_KEY = "switchyard-test-secret-key"
DUMMY_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Other links of the AWS credential chain that could override the dummy keys with real ones.
REAL_CREDENTIAL_VARIABLES = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL (`http://127.0.0.1:<port>`) of a moto S3 server with dummy credentials."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in DUMMY_AWS_ENVIRONMENT.items():
            patch.setenv(name, value)
        for name in REAL_CREDENTIAL_VARIABLES:
            patch.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()  # port 0: the kernel picks a free port, so parallel runs never collide
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def s3_client(endpoint_url: str) -> ClientCreatorContext[S3Client]:
    """A raw client on the test server: `async with s3_client(url) as client: ...`."""
    return aioboto3.Session().client("s3", endpoint_url=endpoint_url)


async def create_bucket(endpoint_url: str, name: str | None = None) -> str:
    """Create a bucket (a unique name unless one is given) and return its name."""
    bucket = name or f"switchyard-test-{uuid.uuid4().hex[:16]}"
    async with s3_client(endpoint_url) as client:
        await client.create_bucket(Bucket=bucket)
    return bucket


async def delete_bucket(endpoint_url: str, name: str) -> None:
    """Delete every object in the bucket, then the bucket."""
    async with s3_client(endpoint_url) as client:
        async for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for entry in page.get("Contents", []):
                await client.delete_object(Bucket=name, Key=entry["Key"])
        await client.delete_bucket(Bucket=name)
