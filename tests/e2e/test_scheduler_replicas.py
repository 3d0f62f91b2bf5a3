"""Three `switchyard run --roles scheduler` processes on one database fire each tick once."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from contextlib import ExitStack
from pathlib import Path

import asyncpg

from tests.support.credentials import ENCRYPTION_KEY
from tests.support.processes import ServerProcess, environment, switchyard_run
from tests.support.waiting import eventually

REPLICAS = 3
RUN_TOGETHER = dt.timedelta(seconds=4)
INSERT_SCHEDULE = """
INSERT INTO schedule_trigger (id, trigger_key, cron, timezone, payload, enabled, misfire_policy,
                              created_at, updated_at)
VALUES ($1, 'every-second', '* * * * * *', 'UTC', '{}', true, 'run_once', now(), now())
"""
FIRED = """
SELECT idempotency_key, source->>'scheduled_for' AS scheduled_for, source->>'scheduler' AS scheduler
FROM trigger_event WHERE trigger_key = 'every-second'
"""


def fired_by(server: ServerProcess) -> int:
    """How many ticks this replica inserted itself (its `schedule_fired` log events)."""
    events = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    return sum(event.get("event") == "schedule_fired" for event in events)


async def test_three_schedulers_fire_every_tick_exactly_once_without_gaps(
    database_dsn: str, database_env: dict[str, str], tmp_path: Path
) -> None:
    connection = await asyncpg.connect(database_dsn)
    try:
        await connection.execute(INSERT_SCHEDULE, uuid.uuid4())
        env = environment(**database_env, ENCRYPTION_KEYS=ENCRYPTION_KEY)
        with ExitStack() as stack:
            servers = [
                stack.enter_context(
                    switchyard_run(["--roles", "scheduler"], env, tmp_path / f"replica-{n}")
                )
                for n in range(REPLICAS)
            ]
            await asyncio.gather(*(asyncio.to_thread(s.wait_ready) for s in servers))
            together = dt.datetime.now(dt.UTC)

            async def ran_together() -> bool:
                rows = await connection.fetch(FIRED)
                last = max(
                    (dt.datetime.fromisoformat(r["scheduled_for"]) for r in rows), default=None
                )
                return last is not None and last >= together + RUN_TOGETHER

            await eventually(
                ran_together, what="several ticks with all replicas running", within=20
            )
            codes = await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))
            assert codes == [0] * REPLICAS, [s.output() for s in servers]
        rows = await connection.fetch(FIRED)
    finally:
        await connection.close()

    keys = [row["idempotency_key"] for row in rows]
    assert len(keys) == len(set(keys))  # one event per tick
    ticks = sorted(dt.datetime.fromisoformat(row["scheduled_for"]) for row in rows)
    assert len(ticks) == len(set(ticks))
    every_second = [ticks[0] + dt.timedelta(seconds=n) for n in range(len(ticks))]
    assert ticks == every_second  # no gaps while they ran
    # Loading happens just after /ready; from then on every tick fired while all ran.
    assert ticks[0] <= together + dt.timedelta(seconds=2)
    assert ticks[-1] >= together + RUN_TOGETHER
    assert all(row["idempotency_key"].endswith(row["scheduled_for"]) for row in rows)
    # Each event was inserted by exactly one replica; the others' attempts were duplicates.
    assert sum(fired_by(server) for server in servers) == len(rows)
    assert {row["scheduler"] for row in rows} <= {
        json.loads(line)["scheduler_id"]
        for server in servers
        for line in server.output().splitlines()
        if '"scheduler_started"' in line
    }
