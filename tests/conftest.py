"""Shared fixtures: a real PostgreSQL (embedded by default, DATABASE_URL when set) and
per-test databases cloned from a migrated template.

The fixtures of the loopback peers and the S3 server live in their support modules and are
declared once here as plugins (pytest reads `pytest_plugins` only in the root conftest), so
every test can request them by name with no import.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from piccolo.engine.postgres import PostgresEngine

from config.settings import Role, Settings
from server.app import create_app
from server.db.embedded import embedded_postgres
from server.db.migrations import migrate
from server.db.pool import open_pool
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.databases import create_database, drop_database, dsn_for_database

pytest_plugins = [
    "tests.support.peers",  # http_peer, other_http_peer, https_peer, smtp_*, tls_client_context
    "tests.support.broken_peers",  # broken_answer_peer
    "tests.support.s3_server",  # s3_server
    "tests.support.registration",  # fake_github, fake_subscriptions, start_process
]


@pytest.fixture(scope="session")
def admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN with the right to create databases: DATABASE_URL, else an embedded server."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    data_dir = Path(tmp_path_factory.mktemp("embedded-pg"))
    with embedded_postgres(data_dir) as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def template_database(admin_dsn: str) -> AsyncIterator[str]:
    name = await create_database(admin_dsn)
    async with open_pool(dsn_for_database(admin_dsn, name)) as engine:
        await migrate(engine)
    # The pool is closed here: nothing may stay connected to a template while it is cloned.
    yield name
    await drop_database(admin_dsn, name)


@pytest.fixture
async def database_dsn(admin_dsn: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database of its own for one test."""
    name = await create_database(admin_dsn, template=template_database)
    yield dsn_for_database(admin_dsn, name)
    await drop_database(admin_dsn, name)


@pytest.fixture
async def empty_database_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """A database with no schema at all, for migration tests."""
    name = await create_database(admin_dsn)
    yield dsn_for_database(admin_dsn, name)
    await drop_database(admin_dsn, name)


@pytest.fixture
async def connection(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A dedicated asyncpg connection to this test's database (outside any pool)."""
    opened = await asyncpg.connect(database_dsn)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def engine(database_dsn: str) -> AsyncIterator[PostgresEngine]:
    """Piccolo's engine with an open pool on this test's database."""
    async with open_pool(database_dsn) as opened:
        yield opened


@pytest.fixture
def settings_for(database_dsn: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings on this test's database; keyword arguments override fields."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_dsn,
            "data_dir": str(tmp_path / "data"),
            "api_tokens": (API_TOKEN,),
            "roles": frozenset(Role),
            "shutdown_grace_seconds": 5.0,
        }
        values.update(overrides)
        return msgspec.convert(values, Settings)

    return make


@pytest.fixture
async def api_client(settings_for: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated client of an app running only the api role on this test's database."""
    app = create_app(settings_for(roles=frozenset({Role.API})))
    async with serving(app, token=API_TOKEN) as client:
        yield client
