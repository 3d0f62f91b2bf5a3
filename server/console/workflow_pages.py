"""Console pages for workflows: the list with each one's versions and last run, and one
workflow (its versions, a version's graph and document, its subscriptions, its recent runs,
and a run button taking JSON input). Reads and the manual run use the functions the REST
handlers use (`server.db.workflows`, `server.db.versions`, `server.db.documents`,
`server.db.subscriptions`, `server.runs.intake.run_manually`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Final

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from server.api.audit_trail import add_to_audit
from server.api.deps import pool_of
from server.api.pagination import page, time_and_id
from server.console.access import OPERATOR, VIEWER
from server.console.execution_view import graph_of
from server.console.rendering import pretty, render, status_of
from server.db import workflows
from server.db.documents import load_document
from server.db.execution_queries import list_executions
from server.db.subscriptions import list_subscriptions
from server.db.versions import list_versions, version_detail
from server.db.workflow_overview import workflow_overview
from server.errors import AppError
from server.runs.intake import run_manually

PAGE_SIZE: Final = 50
RECENT_RUNS: Final = 10
MAX_INPUT_CHARS: Final = 100_000


class WorkflowPages(Controller):
    path = "/workflows"
    include_in_schema = False

    @get("/", opt=VIEWER)
    async def list_page(
        self, request: Request[Any, Any, Any], cursor: FromQuery[str] = ""
    ) -> Template:
        problems = []
        try:
            after = time_and_id(cursor or None)
        except HTTPException:
            problems.append("That page link is stale or altered; showing the first page.")
            after = None
        items = await workflows.list_workflows(limit=PAGE_SIZE + 1, after=after)
        shown = page(items, PAGE_SIZE, lambda item: (item.created_at, item.id))
        async with pool_of(request.app.state).acquire() as connection:
            overview = await workflow_overview(connection, [w.id for w in shown.items])
        return render(request, "workflows.html", page=shown, overview=overview, problems=problems)

    @get("/{workflow_id:uuid}", opt=VIEWER)
    async def workflow_page(
        self,
        request: Request[Any, Any, Any],
        workflow_id: FromPath[uuid.UUID],
        version: FromQuery[int] = 0,
    ) -> Template:
        return render(request, "workflow.html", **await _context(workflow_id, version))

    @post("/{workflow_id:uuid}/run", opt={**OPERATOR, "audit": "execution.run"})
    async def run(
        self, request: Request[Any, Any, Any], workflow_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        """Form field `input`: a JSON object, the run's `trigger` payload (empty means `{}`)."""
        form = await request.form()
        text = str(form.get("input") or "").strip() or "{}"
        problem = None
        run_input: object = None
        try:
            run_input = json.loads(text) if len(text) <= MAX_INPUT_CHARS else None
            if not isinstance(run_input, dict):
                problem = f"Input must be a JSON object of at most {MAX_INPUT_CHARS} characters"
        except ValueError as error:
            problem = f"Input is not JSON ({error})"
        status = 422
        if problem is None:
            try:
                accepted = await run_manually(workflow_id, run_input)
            except AppError as error:
                problem, status = str(error), status_of(error)
            else:
                target = accepted.execution_ids[0]
                add_to_audit(request, execution_id=str(target))
                return Redirect(f"/console/executions/{target}?done=started", status_code=303)
        context = await _context(workflow_id, 0)
        return render(
            request, "workflow.html", status=status, run_input=text,
            problem=f"{problem}; fix it and run again.", **context,
        )  # fmt: skip


async def _context(workflow_id: uuid.UUID, version_num: int) -> dict[str, Any]:
    workflow = await workflows.get_workflow(workflow_id)
    versions = await list_versions(workflow_id)
    chosen = next((v for v in versions if v.version_num == version_num), None)
    if chosen is None and versions:
        chosen = versions[-1]
    detail = await version_detail(chosen) if chosen is not None else None
    document = await load_document(chosen) if chosen is not None else None
    return {
        "workflow": workflow,
        "versions": versions,
        "version": chosen,
        "detail": detail,
        "graph": graph_of(detail) if detail is not None else None,
        "document": pretty(msgspec.to_builtins(document)) if document else "",
        "subscriptions": await list_subscriptions(workflow_id),
        "runs": await list_executions(limit=RECENT_RUNS, before=None, workflow_id=workflow_id),
    }
