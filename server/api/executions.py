"""`/api/v1/executions` and `POST /api/v1/workflows/{id}/run`: runs and their control."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar import get as get_route
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from server.api.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    page,
    time_and_id,
)
from server.db.execution_queries import (
    ExecutionDetail,
    ExecutionView,
    get_execution_detail,
    list_executions,
)
from server.runs import control
from server.runs.intake import run_manually
from server.runs.wait_resumes import resume_from_api


class ExecutionStatusFilter(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class TriggerTypeFilter(StrEnum):
    WEBHOOK = "webhook"
    SCHEDULE = "schedule"
    DATABASE = "database"
    EVENT = "event"
    MANUAL = "manual"
    WORKFLOW = "workflow"  # a child of a call_workflow or foreach step
    ON_FAILURE = "on_failure"  # started by a failed execution's on_failure option


class ExecutionFilters(msgspec.Struct, frozen=True, kw_only=True):
    workflow_id: uuid.UUID | None = None
    status: ExecutionStatusFilter | None = None
    trigger_type: TriggerTypeFilter | None = None
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    parent_id: uuid.UUID | None = None


async def executions_page(
    filters: ExecutionFilters, *, limit: int, cursor: str | None
) -> Page[ExecutionView]:
    """A page of executions, newest first (the API's list and the console's page); a 400
    problem when the cursor is malformed."""
    items = await list_executions(
        limit=limit + 1, before=time_and_id(cursor), workflow_id=filters.workflow_id,
        status=filters.status.value if filters.status else None,
        trigger_type=filters.trigger_type.value if filters.trigger_type else None,
        created_after=filters.created_after, created_before=filters.created_before,
        parent_id=filters.parent_id,
    )  # fmt: skip
    return page(items, limit, lambda item: (item.created_at, item.id))


class RetryFrom(StrEnum):
    FAILED = "failed"
    START = "start"


class RetryVersion(StrEnum):
    PINNED = "pinned"
    LATEST = "latest"


class RunRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    input: dict[str, Any] = msgspec.field(default_factory=dict)


class RunAccepted(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: uuid.UUID


class ResumeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The waiting step's output (as an event's payload would be).
    payload: Any = msgspec.field(default_factory=dict)


class ManualRunController(Controller):
    path = "/workflows/{workflow_id:uuid}/run"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("executions",)

    @post("/", status_code=HTTP_202_ACCEPTED, opt={"role": "operator", "audit": "execution.run"})
    async def run(
        self, workflow_id: FromPath[uuid.UUID], data: JSONBody[RunRequest | None] = None
    ) -> RunAccepted:
        """Start the latest published version now; `input` becomes the `trigger` payload."""
        run_input = data.input if data is not None else {}
        accepted = await run_manually(workflow_id, run_input)
        return RunAccepted(execution_id=accepted.execution_ids[0])


class ExecutionController(Controller):
    path = "/executions"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("executions",)

    @get_route("/")
    async def list_executions(
        self,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        workflow_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[ExecutionStatusFilter | None] = None,
        created_after: FromQuery[dt.datetime | None] = None,
        created_before: FromQuery[dt.datetime | None] = None,
        parent_id: FromQuery[uuid.UUID | None] = None,
        trigger_type: FromQuery[TriggerTypeFilter | None] = None,
    ) -> Page[ExecutionView]:
        """Executions newest first; filter by workflow, status, creation time, parent
        (`parent_id`: the children a `call_workflow` or `foreach` step started) and the kind
        of trigger that started them (`trigger_type`)."""
        filters = ExecutionFilters(
            workflow_id=workflow_id, status=status, trigger_type=trigger_type,
            created_after=created_after, created_before=created_before, parent_id=parent_id,
        )  # fmt: skip
        return await executions_page(filters, limit=limit, cursor=cursor)

    @get_route("/{execution_id:uuid}")
    async def get_execution(self, execution_id: FromPath[uuid.UUID]) -> ExecutionDetail:
        """An execution with its steps in the order they were planned."""
        return await get_execution_detail(execution_id)

    @post(
        "/{execution_id:uuid}/cancel",
        status_code=HTTP_202_ACCEPTED,
        opt={"role": "operator", "audit": "execution.cancel"},
    )
    async def cancel(self, execution_id: FromPath[uuid.UUID]) -> ExecutionDetail:
        """Cancel: queued steps are dropped, a running step finishes but starts nothing new."""
        await control.cancel_execution(execution_id)
        return await get_execution_detail(execution_id)

    @post(
        "/{execution_id:uuid}/retry",
        status_code=HTTP_202_ACCEPTED,
        opt={"role": "operator", "audit": "execution.retry"},
    )
    async def retry(
        self,
        execution_id: FromPath[uuid.UUID],
        from_: Annotated[RetryFrom, QueryParameter(name="from")] = RetryFrom.FAILED,
        version: FromQuery[RetryVersion] = RetryVersion.PINNED,
    ) -> ExecutionDetail:
        """Run a FAILED execution again: from its failed steps, or `from=start`; on its pinned
        version, or `version=latest`: on the workflow's latest published version (fixing
        forward), where the steps that succeeded keep their results (matched by key) and the
        rest run on the new version."""
        await control.retry_execution(
            execution_id,
            from_start=from_ is RetryFrom.START,
            latest=version is RetryVersion.LATEST,
        )
        return await get_execution_detail(execution_id)

    @post(
        "/{execution_id:uuid}/steps/{step_key:str}/resume",
        status_code=HTTP_202_ACCEPTED,
        opt={"role": "operator", "audit": "execution.resume"},
    )
    async def resume_step(
        self,
        execution_id: FromPath[uuid.UUID],
        step_key: FromPath[str],
        data: JSONBody[ResumeRequest | None] = None,
    ) -> ExecutionDetail:
        """Resume a WAITING `wait_for_event` step with `payload` as its output, as an event
        with its correlation key would: it resumes once (a second resume is a 409, as is a
        step of another kind or state: the detail says what it is)."""
        payload = data.payload if data is not None else {}
        await resume_from_api(execution_id, step_key, payload)
        return await get_execution_detail(execution_id)
