"""`/api/v1/jobs`: the queue's dead jobs, for an operator to inspect and re-queue.

A dead job used all its attempts or failed permanently; it stays in the queue with its last
error until someone re-queues it (after fixing the cause) or retention prunes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated

import asyncpg
from litestar import Controller, get, post
from litestar.params import Parameter, PathParameter
from litestar.status_codes import HTTP_200_OK

from server.api.deps import Injected
from server.api.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    decode_cursor,
    invalid_cursor,
    page,
)
from server.queue import admin
from server.queue.jobs import DEFAULT_MAX_ATTEMPTS, DeadJobCursor, Job

ExtraAttempts = Annotated[
    int,
    Parameter(ge=1, le=100, description="attempts the re-queued job gets (default 5)"),
]


class JobController(Controller):
    path = "/jobs"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("jobs",)

    @get("/dead")
    async def list_dead_jobs(
        self,
        pool: Injected[asyncpg.Pool],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> Page[Job]:
        """Dead jobs, most recently dead first, each with its last error."""
        return await dead_jobs_page(pool, limit=limit, cursor=cursor)

    @post(
        "/{job_id:int}/requeue",
        status_code=HTTP_200_OK,
        opt={"role": "operator", "audit": "job.requeue"},
    )
    async def requeue_job(
        self,
        pool: Injected[asyncpg.Pool],
        job_id: Annotated[int, PathParameter(ge=1, le=2**63 - 1)],
        attempts: ExtraAttempts = DEFAULT_MAX_ATTEMPTS,
    ) -> Job:
        """Queue a dead job again now; 404 if it does not exist, 409 if it is not dead."""
        async with pool.acquire() as connection:
            return await admin.requeue_dead_job(connection, job_id, extra_attempts=attempts)


async def dead_jobs_page(pool: asyncpg.Pool, *, limit: int, cursor: str | None) -> Page[Job]:
    """A page of dead jobs after `cursor` (the API's list and the console's page); a 400
    problem when the cursor is malformed."""
    key = decode_cursor(cursor, 2)
    after = None
    if key is not None:
        try:
            after = DeadJobCursor(updated_at=dt.datetime.fromisoformat(key[0]), id=int(key[1]))
        except ValueError:
            raise invalid_cursor() from None
    async with pool.acquire() as connection:
        items = await admin.list_dead_jobs(connection, limit=limit + 1, after=after)
    return page(items, limit, lambda item: (item.updated_at, item.id))
