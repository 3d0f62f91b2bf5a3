"""Per-test databases cloned from a migrated template (STYLE.md: procrastinate, PgQueuer).

Migrations run once per session into a template database; each test that needs PostgreSQL
gets `CREATE DATABASE test_<uuid> TEMPLATE <template>` and drops it `WITH (FORCE)` after. No
connection stays open on the template, or cloning it would fail.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def dsn_for_database(dsn: str, database: str) -> str:
    """The same server and credentials as `dsn`, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def create_database(admin_dsn: str, *, template: str | None = None) -> str:
    name = f"test_{uuid.uuid4().hex[:16]}"
    connection = await asyncpg.connect(admin_dsn)
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await connection.execute(f"CREATE DATABASE {name}{clause}")
    finally:
        await connection.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await connection.close()
