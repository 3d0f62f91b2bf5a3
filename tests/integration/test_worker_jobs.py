"""The worker role runs jobs: success, retries with backoff, dead jobs, timeouts, metrics."""

from __future__ import annotations

import asyncio

import asyncpg
from prometheus_client import REGISTRY

from server.queue import admin, client
from server.queue.handlers import JobContext
from server.queue.jobs import JobState, NewJob, PermanentError, RetryableError
from tests.support.queue_support import fast_settings, worker_on
from tests.support.waiting import eventually


async def job_count(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT count(*) FROM job"))


async def table_empty(connection: asyncpg.Connection) -> bool:
    return await job_count(connection) == 0


async def _jobs_left(connection: asyncpg.Connection, count: int) -> bool:
    return await job_count(connection) == count


async def job_row(connection: asyncpg.Connection, job_id: int) -> asyncpg.Record | None:
    return await connection.fetchrow("SELECT * FROM job WHERE id = $1", job_id)


def sample(name: str, kind: str) -> float:
    return REGISTRY.get_sample_value(name, {"kind": kind}) or 0.0


async def test_a_job_runs_once_with_its_payload_and_leaves_the_table(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    seen: list[tuple[int, str, dict[str, object], int, bool]] = []

    async def greet(context: JobContext) -> None:
        seen.append(
            (
                context.job_id,
                context.kind,
                context.payload,
                context.attempt,
                context.is_last_attempt,
            )
        )

    job_id = await client.enqueue_job(connection, NewJob(kind="greet", payload={"name": "ada"}))
    async with worker_on(database_dsn, {"greet": greet}):
        await eventually(lambda: table_empty(connection), what="job completed")
    assert seen == [(job_id, "greet", {"name": "ada"}, 1, False)]


async def test_an_unknown_kind_makes_the_job_dead_with_a_clear_error(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    job_id = await client.enqueue_job(connection, NewJob(kind="mystery"))
    assert job_id is not None

    async def other(context: JobContext) -> None:
        raise AssertionError("must not run")

    async with worker_on(database_dsn, {"other": other}):
        row = await eventually(
            lambda: connection.fetchrow("SELECT * FROM job WHERE state = 'dead'"), what="dead"
        )
    assert row["id"] == job_id
    assert row["attempts"] == 1
    assert row["last_error"] == (
        "permanent failure on attempt 1: PermanentError: no handler for job kind 'mystery' "
        "(this worker handles: other); deploy a worker that knows it, then re-queue the job"
    )


async def test_retryable_errors_are_retried_with_backoff_until_success(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    attempts: list[int] = []

    async def flaky(context: JobContext) -> None:
        attempts.append(context.attempt)
        if context.attempt < 3:
            raise RetryableError(f"upstream busy ({context.attempt})")

    await client.enqueue_job(connection, NewJob(kind="flaky", max_attempts=3))
    async with worker_on(database_dsn, {"flaky": flaky}):
        await eventually(lambda: table_empty(connection), what="job completed")
    assert attempts == [1, 2, 3]


async def test_an_unexpected_exception_is_retried_and_recorded(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    failed_once = asyncio.Event()

    async def buggy(context: JobContext) -> None:
        if context.attempt == 1:
            failed_once.set()
            raise KeyError("missing")
        await asyncio.Event().wait()  # hold the second attempt: the row shows the first error

    job_id = await client.enqueue_job(connection, NewJob(kind="buggy"))
    assert job_id is not None
    settings = fast_settings(shutdown_grace_seconds=0.1)  # the held attempt is released
    async with worker_on(database_dsn, {"buggy": buggy}, settings):
        row = await eventually(
            lambda: connection.fetchrow(
                "SELECT * FROM job WHERE id = $1 AND attempts = 2 AND state = 'running'", job_id
            ),
            what="second attempt",
        )
    assert row["last_error"] == "KeyError: 'missing'"


async def test_a_requested_retry_delay_is_honoured(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    async def later(context: JobContext) -> None:
        raise RetryableError("rate limited", delay=60)

    job_id = await client.enqueue_job(connection, NewJob(kind="later"))
    assert job_id is not None
    async with worker_on(database_dsn, {"later": later}):
        row = await eventually(
            lambda: connection.fetchrow(
                "SELECT extract(epoch FROM run_at - now()) AS wait, * FROM job"
                " WHERE id = $1 AND state = 'queued' AND attempts = 1",
                job_id,
            ),
            what="retry scheduled",
        )
    assert 55 < row["wait"] <= 60
    assert row["last_error"] == "RetryableError: rate limited"


async def test_exhausted_and_permanent_failures_are_dead_and_can_be_requeued(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    runs: list[tuple[str, int]] = []

    async def fragile(context: JobContext) -> None:
        runs.append((context.kind, context.attempt))
        if context.kind == "broken":
            raise PermanentError("invalid address")
        if context.attempt <= 2:
            raise RetryableError("still down")

    exhausted = await client.enqueue_job(connection, NewJob(kind="fragile", max_attempts=2))
    broken = await client.enqueue_job(connection, NewJob(kind="broken"))
    handlers = {"fragile": fragile, "broken": fragile}
    async with worker_on(database_dsn, handlers):
        dead = await eventually(lambda: _dead_ids(connection, 2), what="two dead jobs")
        assert dead == {exhausted, broken}
        assert exhausted is not None
        await admin.requeue_dead_job(connection, exhausted, extra_attempts=1)
        await eventually(lambda: _gone(connection, exhausted), what="re-queued job completed")
    assert sorted(runs) == [("broken", 1), ("fragile", 1), ("fragile", 2), ("fragile", 3)]
    row = await job_row(connection, broken)  # type: ignore[arg-type]
    assert row is not None
    assert row["last_error"] == "permanent failure on attempt 1: PermanentError: invalid address"


async def _dead_ids(connection: asyncpg.Connection, count: int) -> set[int] | None:
    rows = await connection.fetch("SELECT id FROM job WHERE state = 'dead'")
    return {row["id"] for row in rows} if len(rows) == count else None


async def _gone(connection: asyncpg.Connection, job_id: int) -> bool:
    return await job_row(connection, job_id) is None


async def test_a_handler_running_past_the_timeout_is_cancelled_and_retried(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    cancelled = asyncio.Event()

    async def slow(context: JobContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = await client.enqueue_job(connection, NewJob(kind="slow", max_attempts=1))
    assert job_id is not None
    async with worker_on(database_dsn, {"slow": slow}, fast_settings(job_timeout_seconds=0.2)):
        row = await eventually(
            lambda: connection.fetchrow("SELECT * FROM job WHERE state = 'dead'"), what="dead"
        )
    assert cancelled.is_set()
    assert (
        row["last_error"] == "gave up after 1 of 1 attempts: JobTimeoutError: timed out after 0.2 s"
    )


async def test_a_delayed_job_starts_when_due_without_waiting_for_the_poll(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    started = asyncio.Event()

    async def wake(context: JobContext) -> None:
        started.set()

    settings = fast_settings(job_poll_interval_seconds=30.0)
    async with worker_on(database_dsn, {"wake": wake}, settings):
        await client.enqueue_job(connection, NewJob(kind="wake", delay_seconds=0.3))
        await eventually(started.is_set, within=3.0, what="delayed job started")


async def test_worker_metrics_count_claims_successes_failures_and_dead_jobs(
    database_dsn: str, connection: asyncpg.Connection
) -> None:
    async def metered(context: JobContext) -> None:
        if context.payload["fail"]:
            raise RetryableError("no")

    names = ["claimed", "succeeded", "failed", "dead"]
    before = {n: sample(f"switchyard_jobs_{n}_total", "metered") for n in names}
    await client.enqueue_jobs(
        connection,
        [
            NewJob(kind="metered", payload={"fail": False}),
            NewJob(kind="metered", payload={"fail": True}, max_attempts=2),
        ],
    )
    async with worker_on(database_dsn, {"metered": metered}):
        await eventually(lambda: _dead_ids(connection, 1), what="dead job")
        await eventually(lambda: _jobs_left(connection, 1), what="success completed")
        await eventually(
            lambda: sample("switchyard_jobs_succeeded_total", "metered") > before["succeeded"],
            what="success counted",
        )
    after = {n: sample(f"switchyard_jobs_{n}_total", "metered") for n in names}
    assert {n: after[n] - before[n] for n in names} == {
        "claimed": 3,
        "succeeded": 1,
        "failed": 2,
        "dead": 1,
    }
    assert REGISTRY.get_sample_value("switchyard_jobs_in_flight") == 0
    depth = await client.queue_depth(connection)
    assert [(d.kind, d.state, d.count) for d in depth] == [("metered", JobState.DEAD, 1)]
