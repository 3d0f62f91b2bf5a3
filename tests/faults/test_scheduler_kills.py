"""Three schedulers, one SIGKILLed near tick boundaries again and again (and started again):
every tick still fires exactly once, with no gaps."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
import uuid
from collections.abc import Callable

import asyncpg

from tests.faults.drill import Process, sized
from tests.support.waiting import eventually

INSERT_SCHEDULE = """
INSERT INTO schedule_trigger (id, trigger_key, cron, timezone, payload, enabled, misfire_policy,
                              created_at, updated_at)
VALUES ($1, 'every-second', '* * * * * *', 'UTC', '{}', true, 'run_once', now(), now())
"""
FIRED = """
SELECT idempotency_key, source->>'scheduled_for' AS scheduled_for
FROM trigger_event WHERE trigger_key = 'every-second'
"""


async def _fired_after(connection: asyncpg.Connection, moment: dt.datetime) -> bool:
    """Whether a tick scheduled after `moment` has fired."""
    rows = await connection.fetch(FIRED)
    return any(dt.datetime.fromisoformat(row["scheduled_for"]) > moment for row in rows)


async def _sleep_to_just_before_a_tick(rng: random.Random) -> None:
    now = time.time()
    await asyncio.sleep(1 - (now % 1) - rng.uniform(0.0, 0.08) + rng.randint(0, 1))


async def test_schedulers_killed_near_tick_boundaries_fire_every_tick_once(
    switchyard_check: Callable[[str], str],
    processes: Callable[..., Process],
    database_dsn: str,
    connection: asyncpg.Connection,
) -> None:
    await connection.execute(INSERT_SCHEDULE, uuid.uuid4())
    schedulers = [processes(database_dsn, "scheduler") for _ in range(3)]
    await asyncio.gather(*(asyncio.to_thread(s.wait_ready) for s in schedulers))
    ready = dt.datetime.now(dt.UTC)
    await eventually(lambda: _fired_after(connection, ready), what="a tick fired by the replicas")
    started = dt.datetime.now(dt.UTC)
    rng = random.Random(11)  # noqa: S311 - kill moments, not cryptography
    kills = sized(4, 20)
    for _ in range(kills):
        await _sleep_to_just_before_a_tick(rng)
        victim = rng.choice(schedulers)
        victim.kill()
        schedulers.remove(victim)
        replacement = processes(database_dsn, "scheduler")
        schedulers.append(replacement)
        await asyncio.to_thread(replacement.wait_ready)
    last_kill = dt.datetime.now(dt.UTC)
    await eventually(
        lambda: _fired_after(connection, last_kill + dt.timedelta(seconds=1)),
        what="a full tick fired after the last kill",
    )
    ended = dt.datetime.now(dt.UTC)
    for scheduler in schedulers:
        scheduler.terminate(15)

    rows = await connection.fetch(FIRED)
    keys = [row["idempotency_key"] for row in rows]
    assert len(keys) == len(set(keys))  # never two events for one tick
    ticks = sorted(dt.datetime.fromisoformat(row["scheduled_for"]) for row in rows)
    assert len(ticks) == len(set(ticks))
    window = [t for t in ticks if started <= t <= ended - dt.timedelta(seconds=1)]
    expected = [window[0] + dt.timedelta(seconds=n) for n in range(len(window))]
    assert window == expected  # no tick lost while replicas were being killed
    assert window[-1] - window[0] >= dt.timedelta(seconds=kills)
    switchyard_check(database_dsn)
