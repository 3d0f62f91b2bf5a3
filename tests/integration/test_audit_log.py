"""The audit log is append-only at the database level: the application's own connection (the
pool every process uses) cannot change or remove entries; only the retention prune removes
them, through `audit_log_prune`, and never one less than a day old."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine

from server.access import AccessRole, Principal
from server.db.audit import AuditRecord, append_audit_entry, prune_audit_log
from server.db.pool import asyncpg_pool

INSERT_AT = """
INSERT INTO audit_log (at, token_name, role, action, target_type, target_id)
VALUES (now() - make_interval(days => $1), 'ops', 'admin', 'workflow.update', 'workflow', $2)
"""


async def test_the_applications_connection_cannot_update_delete_or_truncate_entries(
    engine: PostgresEngine,
) -> None:
    async with asyncpg_pool(engine).acquire() as connection:
        await append_audit_entry(
            connection,
            AuditRecord(
                principal=Principal(token_id=None, name="ops", role=AccessRole.EDITOR),
                action="workflow.update",
                target_type="workflow",
                target_id="w1",
                summary={"body": {"name": "new"}},
                request_id="r1",
                source="127.0.0.1",
            ),
        )
        await connection.execute(INSERT_AT, 40, "w-old")
        attempts = [
            "UPDATE audit_log SET summary = '{}'::jsonb",
            "UPDATE audit_log SET action = 'nothing' WHERE target_id = 'w-old'",
            "DELETE FROM audit_log",
            "DELETE FROM audit_log WHERE target_id = 'w-old'",
            "TRUNCATE audit_log",
        ]
        for statement in attempts:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await connection.execute(statement)
        # The prune's mark, set by hand, still lets no recent entry go.
        async with connection.transaction():
            await connection.execute("SELECT set_config('switchyard.audit_prune', 'on', true)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await connection.execute("DELETE FROM audit_log WHERE target_id = 'w1'")
        rows = await connection.fetch("SELECT target_id, action, summary::text FROM audit_log")
    assert sorted((r["target_id"], r["action"]) for r in rows) == [
        ("w-old", "workflow.update"),
        ("w1", "workflow.update"),
    ]


async def test_the_retention_prune_removes_only_entries_past_the_cutoff_and_a_day_old(
    engine: PostgresEngine,
) -> None:
    async with asyncpg_pool(engine).acquire() as connection:
        for days, target in ((40, "old"), (35, "older-than-cutoff"), (10, "kept"), (0, "new")):
            await connection.execute(INSERT_AT, days, target)
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        assert await prune_audit_log(connection, cutoff, 1) == 1  # one batch of one
        assert await prune_audit_log(connection, cutoff, 1000) == 1
        assert await prune_audit_log(connection, cutoff, 1000) == 0
        # A cutoff in the future is held to the one-day floor.
        future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        assert await prune_audit_log(connection, future, 1000) == 1
        left = await connection.fetch("SELECT target_id FROM audit_log")
    assert [row["target_id"] for row in left] == ["new"]
