"""Console pages for executions: the filtered list (`/console/executions`) and one execution
(`/console/executions/{id}`) with its graph, timeline and steps, and the operator's actions on
it (cancel, retry, retry on the latest version, resume a waiting step).

Everything is read and changed through the functions the REST handlers call
(`server.api.executions.executions_page`, `server.db.execution_queries`, `server.runs.control`,
`server.runs.wait_resumes`), so the console shows and does exactly what the API would.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from server.api.deps import pool_of
from server.api.executions import (
    ExecutionFilters,
    ExecutionStatusFilter,
    TriggerTypeFilter,
    executions_page,
)
from server.console.access import OPERATOR, VIEWER
from server.console.execution_view import execution_page_context
from server.console.rendering import render, status_of
from server.db import workflows
from server.errors import AppError
from server.runs import control
from server.runs.wait_resumes import resume_from_api

PAGE_SIZE: Final = 50
WORKFLOW_CHOICES: Final = 500
DONE_MESSAGES: Final = {
    "cancelled": "Cancelled: queued steps were dropped; a running step finishes but starts "
    "nothing new.",
    "retried": "Retrying: the failed steps run again.",
    "retried_latest": "Retrying on the latest published version: the steps that succeeded "
    "keep their results.",
    "retried_start": "Retrying from the start.",
    "resumed": "Resumed: the step continues with the payload as its output.",
    "started": "Started: this is the new run.",
}


class ExecutionFilterForm(msgspec.Struct, frozen=True, kw_only=True):
    """The list's query string as typed in the filter form (empty fields mean no filter)."""

    workflow_id: str = ""
    status: str = ""
    trigger_type: str = ""
    created_after: str = ""
    created_before: str = ""
    cursor: str = ""


def parse_filters(form: ExecutionFilterForm) -> tuple[ExecutionFilters, list[str]]:
    """The filters, and a sentence for each field that cannot be read (that filter is ignored)."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    readers: dict[str, tuple[Any, str]] = {
        "workflow_id": (uuid.UUID, "Workflow must be one of the list."),
        "status": (ExecutionStatusFilter, "Status must be one of the list."),
        "trigger_type": (TriggerTypeFilter, "Trigger must be one of the list."),
        "created_after": (_moment, "From must be a date and time, such as 2026-12-08T09:30."),
        "created_before": (_moment, "Until must be a date and time, such as 2026-12-08T18:00."),
    }
    for name, (reader, problem) in readers.items():
        raw = getattr(form, name).strip()
        if not raw:
            continue
        try:
            values[name] = reader(raw)
        except ValueError:
            problems.append(problem)
    return ExecutionFilters(**values), problems


def _moment(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class ExecutionPages(Controller):
    path = "/executions"
    include_in_schema = False

    @get("/", opt=VIEWER)
    async def list_page(
        self,
        request: Request[Any, Any, Any],
        workflow_id: FromQuery[str] = "",
        status: FromQuery[str] = "",
        trigger_type: FromQuery[str] = "",
        created_after: FromQuery[str] = "",
        created_before: FromQuery[str] = "",
        cursor: FromQuery[str] = "",
    ) -> Template:
        form = ExecutionFilterForm(
            workflow_id=workflow_id, status=status, trigger_type=trigger_type,
            created_after=created_after, created_before=created_before, cursor=cursor,
        )  # fmt: skip
        filters, problems = parse_filters(form)
        try:
            shown = await executions_page(filters, limit=PAGE_SIZE, cursor=cursor or None)
        except HTTPException:
            problems.append("That page link is stale or altered; showing the first page.")
            shown = await executions_page(filters, limit=PAGE_SIZE, cursor=None)
        choices = await workflows.list_workflows(limit=WORKFLOW_CHOICES, after=None)
        query = {k: v for k, v in msgspec.structs.asdict(form).items() if v and k != "cursor"}
        return render(
            request, "executions.html", status=400 if problems else 200,
            page=shown, form=form, problems=problems, query=query,
            workflow_names={w.id: w.name for w in choices}, workflows=choices,
            statuses=list(ExecutionStatusFilter), trigger_types=list(TriggerTypeFilter),
            live=not cursor,
        )  # fmt: skip

    @get("/{execution_id:uuid}", opt=VIEWER)
    async def execution_page(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[uuid.UUID],
        done: FromQuery[str] = "",
    ) -> Template:
        context = await execution_page_context(pool_of(request.app.state), execution_id)
        return render(request, "execution.html", notice=DONE_MESSAGES.get(done), **context)

    @post("/{execution_id:uuid}/cancel", opt={**OPERATOR, "audit": "execution.cancel"})
    async def cancel(
        self, request: Request[Any, Any, Any], execution_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        return await _act(request, execution_id, "cancelled", control.cancel_execution)

    @post("/{execution_id:uuid}/retry", opt={**OPERATOR, "audit": "execution.retry"})
    async def retry(
        self, request: Request[Any, Any, Any], execution_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Form fields: `from` (`failed` or `start`), `version` (`pinned` or `latest`)."""
        form = await request.form()
        from_start = form.get("from") == "start"
        latest = form.get("version") == "latest"
        done = "retried_start" if from_start else "retried_latest" if latest else "retried"

        async def retry(target: uuid.UUID) -> None:
            await control.retry_execution(target, from_start=from_start, latest=latest)

        return await _act(request, execution_id, done, retry)

    @post(
        "/{execution_id:uuid}/steps/{step_key:str}/resume",
        opt={**OPERATOR, "audit": "execution.resume"},
    )
    async def resume(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[uuid.UUID],
        step_key: FromPath[str],
    ) -> Template | Redirect:
        """Form field `payload`: JSON, the step's output (empty means `{}`)."""
        form = await request.form()
        text = str(form.get("payload") or "").strip() or "{}"
        try:
            payload = json.loads(text)
        except ValueError as error:
            context = await execution_page_context(pool_of(request.app.state), execution_id)
            return render(
                request, "execution.html", status=422, resume_text=text, **context,
                problem=f"The payload for {step_key} is not JSON ({error}); "
                'write an object such as {"approved": true}.',
            )  # fmt: skip

        async def resume(target: uuid.UUID) -> None:
            await resume_from_api(target, step_key, payload)

        return await _act(request, execution_id, "resumed", resume)


async def _act(
    request: Request[Any, Any, Any],
    execution_id: uuid.UUID,
    done: str,
    action: Callable[[uuid.UUID], Awaitable[None]],
) -> Template | Redirect:
    """Run an operator action; on success back to the page with a notice, on refusal the
    page again with the reason (a 404 or 409 as the API answers)."""
    try:
        await action(execution_id)
    except AppError as error:
        context = await execution_page_context(pool_of(request.app.state), execution_id)
        return render(
            request, "execution.html", status=status_of(error), problem=str(error), **context
        )
    return Redirect(f"/console/executions/{execution_id}?done={done}", status_code=303)
