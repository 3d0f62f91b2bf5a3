"""A scheduler starting after downtime, and fires that fail: caught up once, kept, survived."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import asyncpg
import httpx
import pytest

from config.settings import Role, Settings
from server.app import create_app
from tests.e2e.test_scheduler import events_of
from tests.support.apps import serving
from tests.support.waiting import eventually

INSERT_SCHEDULE = """
INSERT INTO schedule_trigger (id, trigger_key, cron, timezone, payload, enabled, misfire_policy,
                              last_fire_at, next_fire_at, created_at, updated_at)
VALUES ($1, $2, $3, 'UTC', '{}', true, $4, $5, $6, now(), now())
"""
SCHEDULE_STATE = "SELECT last_fire_at, next_fire_at, last_error FROM schedule_trigger WHERE id = $1"
# Fault injection: inserting an event for the trigger key 'broken' fails until dropped.
BREAK_INTAKE = """
CREATE FUNCTION refuse_broken() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.trigger_key = 'broken' THEN RAISE EXCEPTION 'intake is down for broken'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_broken BEFORE INSERT ON trigger_event
FOR EACH ROW EXECUTE FUNCTION refuse_broken();
"""
REPAIR_INTAKE = "DROP TRIGGER refuse_broken ON trigger_event"


@pytest.fixture
def start_scheduler(
    settings_for: Callable[..., Settings],
) -> Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]:
    def start() -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serving(create_app(settings_for(roles=frozenset({Role.SCHEDULER}))))

    return start


def january_first(year: int) -> dt.datetime:
    return dt.datetime(year, 1, 1, tzinfo=dt.UTC)


async def test_after_downtime_run_once_fires_one_catch_up_and_skip_fires_none(
    connection: asyncpg.Connection,
    start_scheduler: Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    # A yearly schedule whose last two ticks passed while no scheduler ran.
    year = dt.datetime.now(dt.UTC).year
    run_once, skip = uuid.uuid4(), uuid.uuid4()
    for schedule_id, policy in ((run_once, "run_once"), (skip, "skip")):
        await connection.execute(
            INSERT_SCHEDULE, schedule_id, f"yearly-{policy}", "0 0 1 1 *", policy,
            january_first(year - 2), january_first(year - 1),
        )  # fmt: skip

    async def planned_ahead(schedule_id: uuid.UUID) -> bool:
        state = await state_of(connection, schedule_id)
        return bool(state["next_fire_at"] == january_first(year + 1))

    async with start_scheduler():
        await eventually(lambda: planned_ahead(run_once), what="the catch-up fire")
        await eventually(lambda: planned_ahead(skip), what="the skipped ticks to be planned past")

    [catch_up] = await events_of(connection, str(run_once))
    assert catch_up["key"] == f"schedule:{run_once}:{year}-01-01T00:00:00+00:00"
    assert catch_up["source"]["catch_up"] is True
    assert catch_up["source"]["missed_since"] == january_first(year - 1).isoformat()
    state = await state_of(connection, run_once)
    assert state["last_fire_at"] == january_first(year)
    assert await events_of(connection, str(skip)) == []
    assert (await state_of(connection, skip))["last_fire_at"] == january_first(year - 2)


async def test_a_failing_fire_is_kept_counted_and_retried_while_other_schedules_fire(
    connection: asyncpg.Connection,
    start_scheduler: Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    broken, healthy = uuid.uuid4(), uuid.uuid4()
    for schedule_id, key in ((broken, "broken"), (healthy, "healthy")):
        await connection.execute(
            INSERT_SCHEDULE, schedule_id, key, "* * * * * *", "run_once", None, None
        )
    await connection.execute(BREAK_INTAKE)

    async def last_error() -> str | None:
        error: str | None = (await state_of(connection, broken))["last_error"]
        return error

    async def error_kept() -> bool:
        return await last_error() is not None

    async def error_cleared() -> bool:
        return await last_error() is None

    async def refused_counted() -> bool:
        row = await connection.fetchrow(
            "SELECT refused, last_error FROM trigger_health WHERE trigger_key = 'broken'"
        )
        return row is not None and row["refused"] >= 2 and "intake is down" in row["last_error"]

    async with start_scheduler():
        await eventually(error_kept, what="the fire error on the schedule")
        assert "intake is down for broken" in (await last_error() or "")
        await eventually(refused_counted, what="failed fires counted in trigger health")
        healthy_fires = len(await events_of(connection, str(healthy)))
        await eventually(
            lambda: _more(connection, healthy, healthy_fires + 1),
            what="the healthy schedule to go on",
        )
        await connection.execute(REPAIR_INTAKE)
        await eventually(lambda: _more(connection, broken, 1), what="the repaired schedule to fire")
        await eventually(error_cleared, what="the error cleared by a successful fire")

    fired = [e["source"]["scheduled_for"] for e in await events_of(connection, str(broken))]
    assert len(fired) == len(set(fired))


async def _more(connection: asyncpg.Connection, schedule_id: uuid.UUID, count: int) -> bool:
    return len(await events_of(connection, str(schedule_id))) >= count


async def state_of(connection: asyncpg.Connection, schedule_id: uuid.UUID) -> asyncpg.Record:
    row = await connection.fetchrow(SCHEDULE_STATE, schedule_id)
    assert row is not None
    return row
