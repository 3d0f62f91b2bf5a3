"""Housekeeping: retention pruning keeps unfinished and recent work; lost triggers come back."""

from __future__ import annotations

import datetime as dt

import msgspec
from piccolo.engine.postgres import PostgresEngine

from config.settings import Settings
from server.db.pool import asyncpg_pool
from server.db.registry import register_trigger
from server.scheduler.maintenance import MAINTENANCE_LOCK_ID, maintenance_pass

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=40)
RECENT = NOW - dt.timedelta(days=2)
SETTINGS = msgspec.convert(
    {"retention_days": 30, "database_trigger_tables": ["lead_sources"]}, Settings
)

SEED = """
WITH d AS (INSERT INTO workflow_definition (name) VALUES ('w') RETURNING id),
v AS (INSERT INTO workflow_version (workflow_id, version_num, status)
      SELECT id, 1, 'published' FROM d RETURNING id, workflow_id)
INSERT INTO workflow_execution (workflow_id, version_id, status, created_at, finished_at)
SELECT v.workflow_id, v.id, s.status, s.at, s.finished FROM v,
  (VALUES ('SUCCESS', $1::timestamptz, $1::timestamptz), ('FAILED', $2::timestamptz, $2::timestamptz),
          ('RUNNING', $1::timestamptz, NULL::timestamptz)) AS s(status, at, finished)
"""


async def test_retention_prunes_only_old_finished_work(
    engine: PostgresEngine, database_dsn: str
) -> None:
    pool = asyncpg_pool(engine)
    async with pool.acquire() as connection:
        await connection.execute(SEED, OLD, RECENT)
        await connection.execute(
            "INSERT INTO trigger_event (trigger_key, trigger_type, received_at) VALUES ('k', 'event', $1), ('k', 'event', $2)",
            OLD, RECENT,
        )  # fmt: skip
        await connection.execute(
            "INSERT INTO job (kind, state, updated_at) VALUES ('x', 'dead', $1), ('x', 'dead', $2), ('x', 'queued', $1)",
            OLD, RECENT,
        )  # fmt: skip
        await connection.execute(
            "INSERT INTO audit_log (at, token_name, role, action, target_type) VALUES ($1, 'a', 'admin', 'x.y', 'x'), ($2, 'a', 'admin', 'x.y', 'x')",
            OLD, RECENT,
        )  # fmt: skip
    report = await maintenance_pass(pool, SETTINGS, NOW, direct_dsn=database_dsn)
    assert report is not None
    assert report.pruned == {"executions": 1, "events": 1, "jobs": 1, "audit": 1}
    async with pool.acquire() as connection:
        statuses = sorted(
            r["status"] for r in await connection.fetch("SELECT status FROM workflow_execution")
        )
        jobs = sorted(r["state"] for r in await connection.fetch("SELECT state FROM job"))
    assert statuses == ["FAILED", "RUNNING"]  # recent, and unfinished however old
    assert jobs == ["dead", "queued"]
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT array_agg(at) FROM audit_log") == [RECENT]


async def test_a_pass_is_skipped_while_another_replica_holds_the_lock(
    engine: PostgresEngine, database_dsn: str
) -> None:
    pool = asyncpg_pool(engine)
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", MAINTENANCE_LOCK_ID)
        assert await maintenance_pass(pool, SETTINGS, NOW, direct_dsn=database_dsn) is None
        await holder.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_ID)
    assert await maintenance_pass(pool, SETTINGS, NOW, direct_dsn=database_dsn) is not None


async def test_a_capture_trigger_lost_with_its_table_is_reinstalled_or_reported(
    engine: PostgresEngine, database_dsn: str
) -> None:
    pool = asyncpg_pool(engine)
    async with pool.acquire() as connection:
        await connection.execute("CREATE TABLE lead_sources (id serial PRIMARY KEY, name text)")
    await register_trigger(
        trigger_key="leads", type="database", description="", config={"table": "lead_sources"},
        allowed_tables=SETTINGS.database_trigger_tables,
    )  # fmt: skip
    async with pool.acquire() as connection:
        await connection.execute("DROP TABLE lead_sources")
        await connection.execute("CREATE TABLE lead_sources (id serial PRIMARY KEY, name text)")
    report = await maintenance_pass(pool, SETTINGS, NOW, direct_dsn=database_dsn)
    assert report is not None
    assert report.repaired == ["leads"]
    async with pool.acquire() as connection:
        await connection.execute("INSERT INTO lead_sources (name) VALUES ('Ann')")
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM trigger_event WHERE trigger_key = 'leads'"
            )
            == 1
        )
        await connection.execute("DROP TABLE lead_sources")
    report = await maintenance_pass(pool, SETTINGS, NOW, direct_dsn=database_dsn)
    assert report is not None
    assert "does not exist" in report.unrepaired["leads"]
    async with pool.acquire() as connection:
        error = await connection.fetchval(
            "SELECT last_error FROM trigger_health WHERE trigger_key = 'leads'"
        )
    assert "does not exist" in error


async def test_an_execution_whose_step_job_died_is_failed_not_left_running(
    engine: PostgresEngine, database_dsn: str
) -> None:
    pool = asyncpg_pool(engine)
    async with pool.acquire() as connection:
        await connection.execute(SEED, OLD, RECENT)
        execution_id = await connection.fetchval(
            "SELECT id FROM workflow_execution WHERE status = 'RUNNING'"
        )
        await connection.execute(
            "INSERT INTO job (kind, state, payload, last_error) VALUES ('workflow_step', 'dead', $1::jsonb, 'JobTimeoutError')",
            f'{{"execution_id": "{execution_id}", "step_key": "slow"}}',
        )  # fmt: skip
    report = await maintenance_pass(pool, SETTINGS, NOW, direct_dsn=database_dsn)
    assert report is not None
    assert report.dead_steps == 1
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            "SELECT status, error FROM workflow_execution WHERE id = $1", execution_id
        )
    assert row is not None
    assert row["status"] == "FAILED"
    assert "JobTimeoutError" in row["error"]
    again = await maintenance_pass(pool, SETTINGS, NOW, direct_dsn=database_dsn)
    assert again is not None
    assert again.dead_steps == 0
