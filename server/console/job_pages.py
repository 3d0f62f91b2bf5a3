"""The console's Dead jobs page and its re-queue button, through the REST handlers' own
functions (`server.api.jobs.dead_jobs_page`, `server.queue.admin.requeue_dead_job`)."""

from __future__ import annotations

from typing import Any, Final

from litestar import Controller, Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from server.api.deps import pool_of
from server.api.jobs import dead_jobs_page
from server.console.access import OPERATOR, VIEWER
from server.console.rendering import render, status_of
from server.errors import AppError
from server.queue import admin
from server.queue.jobs import DEFAULT_MAX_ATTEMPTS

PAGE_SIZE: Final = 50
MAX_JOB_ID: Final = 2**63 - 1


class JobPages(Controller):
    path = "/jobs"
    include_in_schema = False

    @get("/dead", opt=VIEWER)
    async def dead_page(
        self,
        request: Request[Any, Any, Any],
        cursor: FromQuery[str] = "",
        requeued: FromQuery[int] = 0,
    ) -> Template:
        return await _dead_page(request, cursor=cursor, requeued=requeued)

    @post("/{job_id:int}/requeue", opt={**OPERATOR, "audit": "job.requeue"})
    async def requeue(
        self, request: Request[Any, Any, Any], job_id: FromPath[int]
    ) -> Template | Redirect:
        """Queue a dead job again with the API's default number of extra attempts."""
        if not 1 <= job_id <= MAX_JOB_ID:
            return await _dead_page(request, problem=f"job {job_id} not found", status=404)
        try:
            async with pool_of(request.app.state).acquire() as connection:
                await admin.requeue_dead_job(
                    connection, job_id, extra_attempts=DEFAULT_MAX_ATTEMPTS
                )
        except AppError as error:
            return await _dead_page(request, problem=str(error), status=status_of(error))
        return Redirect(f"/console/jobs/dead?requeued={job_id}", status_code=303)


async def _dead_page(
    request: Request[Any, Any, Any],
    *,
    cursor: str = "",
    requeued: int = 0,
    problem: str | None = None,
    status: int = 200,
) -> Template:
    pool = pool_of(request.app.state)
    try:
        shown = await dead_jobs_page(pool, limit=PAGE_SIZE, cursor=cursor or None)
    except HTTPException:
        problem = "That page link is stale or altered; showing the first page."
        shown = await dead_jobs_page(pool, limit=PAGE_SIZE, cursor=None)
    return render(
        request, "dead_jobs.html", status=status, page=shown, problem=problem,
        requeued=requeued or None,
    )  # fmt: skip
