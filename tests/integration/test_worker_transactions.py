"""A handler's result, its successor jobs and the job's completion commit together or not at all
(`JobContext.transaction()`), fenced by the lease."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from structlog.testing import capture_logs

from server.queue import client
from server.queue.handlers import JobContext
from server.queue.jobs import NewJob, RetryableError
from tests.support.queue_support import worker_on
from tests.support.waiting import eventually


@pytest.fixture
async def connection(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    opened = await asyncpg.connect(database_dsn)
    await opened.execute("CREATE TABLE step_result (job_id bigint, attempt int)")
    yield opened
    await opened.close()


async def rows(connection: asyncpg.Connection, query: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in await connection.fetch(query)]


async def test_result_successors_and_completion_commit_together(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    async def step(context: JobContext) -> None:
        async with context.transaction() as tx:
            await tx.execute("INSERT INTO step_result VALUES ($1, $2)", context.job_id, 1)
            await client.enqueue_jobs(tx, [NewJob(kind="next", payload={"after": context.job_id})])

    job_id = await client.enqueue_job(connection, NewJob(kind="step"))
    async with worker_on(database_dsn, {"step": step}):
        await eventually(lambda: _kinds(connection, ["next"]), what="successor only")
    assert await rows(connection, "SELECT job_id, attempt FROM step_result") == [(job_id, 1)]
    payload = await connection.fetchval("SELECT payload::text FROM job")
    assert payload == f'{{"after": {job_id}}}'


async def _kinds(connection: asyncpg.Connection, expected: list[str]) -> bool:
    found = [row[0] for row in await connection.fetch("SELECT kind FROM job ORDER BY id")]
    return found == expected


async def test_a_failing_transaction_leaves_no_result_and_no_successor(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    async def step(context: JobContext) -> None:
        async with context.transaction() as tx:
            await tx.execute(
                "INSERT INTO step_result VALUES ($1, $2)", context.job_id, context.attempt
            )
            await client.enqueue_job(tx, NewJob(kind="next", payload={"n": context.attempt}))
            if context.attempt == 1:
                raise RetryableError("the step failed after writing")

    job_id = await client.enqueue_job(connection, NewJob(kind="step"))
    async with worker_on(database_dsn, {"step": step}):
        await eventually(lambda: _kinds(connection, ["next"]), what="successor only")
    assert await rows(connection, "SELECT job_id, attempt FROM step_result") == [(job_id, 2)]
    assert await rows(connection, "SELECT payload::text FROM job") == [('{"n": 2}',)]


async def test_a_worker_that_lost_its_lease_commits_nothing(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    inside = asyncio.Event()
    stolen = asyncio.Event()

    async def step(context: JobContext) -> None:
        async with context.transaction() as tx:
            await tx.execute("INSERT INTO step_result VALUES ($1, 1)", context.job_id)
            await client.enqueue_job(tx, NewJob(kind="next"))
            inside.set()
            await stolen.wait()

    job_id = await client.enqueue_job(connection, NewJob(kind="step"))
    with capture_logs() as logs:
        async with worker_on(database_dsn, {"step": step}):
            await eventually(inside.is_set, what="handler inside its transaction")
            # Another worker took the job over (the lease expired and it was rescued).
            await connection.execute("UPDATE job SET lease_token = gen_random_uuid()")
            stolen.set()
            await eventually(
                lambda: any(e["event"] == "job_lease_lost" for e in logs), what="lease lost"
            )
    assert await rows(connection, "SELECT * FROM step_result") == []
    assert await rows(connection, "SELECT id, kind, state FROM job") == [
        (job_id, "step", "running")
    ]
    [lost] = [e for e in logs if e["event"] == "job_lease_lost"]
    assert (lost["job_id"], lost["kind"], lost["log_level"]) == (job_id, "step", "warning")


async def test_a_handler_completes_its_job_only_once(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    errors: list[str] = []

    async def twice(context: JobContext) -> None:
        async with context.transaction():
            pass
        try:
            async with context.transaction():
                pass
        except RuntimeError as error:
            errors.append(str(error))

    job_id = await client.enqueue_job(connection, NewJob(kind="twice"))
    async with worker_on(database_dsn, {"twice": twice}):
        await eventually(lambda: errors, what="second transaction refused")
    assert errors == [f"job {job_id} is already completed; use one transaction"]
    assert await rows(connection, "SELECT id FROM job") == []
