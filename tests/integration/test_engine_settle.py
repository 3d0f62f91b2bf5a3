"""The engine's one-statement completion (`settle_step`) against PostgreSQL: it writes only
while the execution is at the version the job planned from, and only with the job's lease."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import msgspec
import pytest

from server.crypto.aead import Keyring
from server.engine.planning import ExecutionStatus, StepStatus
from server.queue.client import claim_jobs, enqueue_job
from server.queue.jobs import Lease, NewJob
from server.runs.store import StepResult, settle_step, start_step
from tests.support.action_contexts import RunningStep, insert_running_step
from tests.support.waiting import eventually

KEYRING = Keyring([("k1", bytes(32))])
DONE = StepResult(status=StepStatus.SUCCESS, result_data={"ok": True}, attempts=1)
WAIT_EVENT_TYPE = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1"


@pytest.fixture
async def running_step(connection: asyncpg.Connection) -> RunningStep:
    return await insert_running_step(connection)


class Started(msgspec.Struct, frozen=True, kw_only=True):
    lease: Lease  # of the step's claimed job
    version: str  # the execution's, as the step's start read it


@pytest.fixture
async def started(connection: asyncpg.Connection, running_step: RunningStep) -> Started:
    """The step's job claimed and the step started, as a worker does."""
    payload = {"execution_id": str(running_step.execution_id), "step_key": "task"}
    await enqueue_job(connection, NewJob(kind="workflow_step", payload=payload))
    [job] = await claim_jobs(connection, worker_id="test", limit=1, lease_seconds=30)
    start = await start_step(
        connection, running_step.execution_id, "task", 1, KEYRING, resume=False
    )
    assert start is not None
    assert (start.marked, start.raced) == (True, False)
    return Started(lease=job.lease, version=start.version)


async def settle(
    connection: asyncpg.Connection, step: RunningStep, version: str, lease: Lease
) -> tuple[bool, bool]:
    settled = await settle_step(
        connection, step.execution_id, version=version, step_key="task", result=DONE,
        planned=[], status=ExecutionStatus.SUCCESS, lease=lease, continue_as=None, enqueue=[],
    )  # fmt: skip
    return settled.done, settled.lease_held


async def state(connection: asyncpg.Connection, step: RunningStep) -> tuple[str, str, int]:
    row = await connection.fetchrow(
        """
        SELECT s.status AS step, e.status AS execution,
               (SELECT count(*) FROM job WHERE kind = 'workflow_step') AS jobs
        FROM step_execution s JOIN workflow_execution e ON e.id = s.execution_id
        WHERE s.id = $1
        """,
        step.step_execution_id,
    )
    assert row is not None
    return row["step"], row["execution"], row["jobs"]


async def test_it_settles_the_step_and_its_job_at_the_version_it_planned_from(
    connection: asyncpg.Connection, running_step: RunningStep, started: Started
) -> None:
    assert await settle(connection, running_step, started.version, started.lease) == (True, True)
    assert await state(connection, running_step) == ("SUCCESS", "SUCCESS", 0)


async def test_a_change_since_that_version_makes_it_write_nothing(
    connection: asyncpg.Connection, running_step: RunningStep, started: Started
) -> None:
    # Any committed change to the execution row (a parallel branch's completion, a cancel).
    await connection.execute(
        "UPDATE workflow_execution SET updated_at = now() WHERE id = $1",
        running_step.execution_id,
    )
    assert await settle(connection, running_step, started.version, started.lease) == (False, True)
    assert await state(connection, running_step) == ("RUNNING", "RUNNING", 1)


async def test_without_the_lease_it_writes_nothing_and_says_so(
    connection: asyncpg.Connection, running_step: RunningStep, started: Started
) -> None:
    stolen = Lease(job_id=started.lease.job_id, lease_token=uuid.uuid4())
    assert await settle(connection, running_step, started.version, stolen) == (False, False)
    assert await state(connection, running_step) == ("RUNNING", "RUNNING", 1)


async def test_a_change_that_commits_while_it_waits_for_the_lock_is_seen(
    connection: asyncpg.Connection, running_step: RunningStep, started: Started, database_dsn: str
) -> None:
    other = await asyncpg.connect(database_dsn)
    watcher = await asyncpg.connect(database_dsn)  # outside `other`'s transaction and snapshot
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute(
            "UPDATE workflow_execution SET steps_run = steps_run + 1 WHERE id = $1",
            running_step.execution_id,
        )
        task = asyncio.ensure_future(
            settle(connection, running_step, started.version, started.lease)
        )
        await eventually(
            lambda: watcher.fetchval(WAIT_EVENT_TYPE, connection.get_server_pid()),
            until=lambda wait_event_type: wait_event_type == "Lock",
            what="the settle waiting for a lock",
        )
        assert not task.done()  # blocked on the execution's row lock
        await transaction.commit()
        assert await task == (False, True)
    finally:
        await other.close()
        await watcher.close()
    assert await state(connection, running_step) == ("RUNNING", "RUNNING", 1)
