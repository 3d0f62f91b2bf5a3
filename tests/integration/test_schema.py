from __future__ import annotations

import asyncpg
from piccolo.engine.postgres import PostgresEngine

from server.db.migrations import known_migrations, migrate, pending_migrations
from server.db.pool import open_pool
from server.db.tables import TABLES

EXPECTED_TABLES = {
    "workflow_definition", "workflow_version", "workflow_step", "workflow_edge",
    "workflow_variable", "workflow_subscription", "webhook_endpoint", "schedule_trigger",
    "workflow_action_registry", "workflow_trigger_registry", "credential_type",
    "user_credentials", "workflow_execution", "step_execution", "tasks", "trigger_event", "job",
}  # fmt: skip


async def test_migrations_create_all_tables_and_the_view_on_an_empty_database(
    empty_database_dsn: str,
) -> None:
    async with open_pool(empty_database_dsn) as engine:
        applied = await migrate(engine)
        assert set(applied) == known_migrations()
        assert await migrate(engine) == []
    connection = await asyncpg.connect(empty_database_dsn)
    try:
        rows = await connection.fetch(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = 'public'"
        )
        assert await pending_migrations(connection) == frozenset()
    finally:
        await connection.close()
    tables = {r["table_name"] for r in rows if r["table_type"] == "BASE TABLE"}
    views = {r["table_name"] for r in rows if r["table_type"] == "VIEW"}
    assert tables == EXPECTED_TABLES | {
        "migration",
        "api_token",
        "trigger_health",
        "webhook_registration",
        "audit_log",
    }
    assert views == {"workflow_latest_json"}
    assert {table._meta.tablename for table in TABLES} == EXPECTED_TABLES


async def test_claim_index_is_partial_on_queued_jobs(engine: PostgresEngine) -> None:
    rows = await engine.run_ddl(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'job' AND indexname = 'job_claim_idx'"
    )
    assert "WHERE ((state)::text = 'queued'::text)" in rows[0]["indexdef"]


async def test_the_engines_hot_tables_leave_room_for_in_place_updates(
    engine: PostgresEngine,
) -> None:
    rows = await engine.run_ddl(
        "SELECT relname, reloptions FROM pg_class "
        "WHERE relname IN ('step_execution', 'workflow_execution')"
    )
    assert {row["relname"]: row["reloptions"] for row in rows} == {
        "step_execution": ["fillfactor=85"],
        "workflow_execution": ["fillfactor=85"],
    }
