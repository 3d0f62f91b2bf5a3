"""`/api/v1/workflows/{id}/versions`: drafts, their validation, and publishing."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import msgspec
from litestar import Controller, get, post, put
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from config.settings import Settings
from server.api.deps import Injected, Resources
from server.api.pagination import Page, VersionNumber
from server.db import versions
from server.db.documents import load_document
from server.db.publishing import document_problems, publish_version
from server.db.versions import EdgeRecord, StepRecord, VersionSummary
from server.engine.document import Concurrency, OnFailure, WorkflowOptions
from server.engine.validation import Problem


class DraftCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    from_latest: bool = True
    """Start from a copy of the latest version's steps and edges (else empty)."""


class VersionView(VersionSummary, frozen=True, kw_only=True):
    steps: list[StepRecord]
    edges: list[EdgeRecord]
    options: WorkflowOptions
    """The workflow options: `on_failure` and `concurrency` (DESIGN §5.1)."""


class OptionsBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    on_failure: OnFailure | None = None
    concurrency: Concurrency | None = None


class ValidationReport(msgspec.Struct, frozen=True, kw_only=True):
    valid: bool
    errors: list[Problem]


async def _view(version: VersionSummary) -> VersionView:
    detail = await versions.version_detail(version)
    return VersionView(
        **msgspec.structs.asdict(version),
        steps=detail.steps,
        edges=detail.edges,
        options=detail.options,
    )


class VersionController(Controller):
    path = "/workflows/{workflow_id:uuid}/versions"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("versions",)

    @get("/")
    async def list_versions(self, workflow_id: FromPath[uuid.UUID]) -> Page[VersionSummary]:
        """Every version of the workflow, oldest first (a workflow has few)."""
        return Page(items=await versions.list_versions(workflow_id), next_cursor=None)

    @post("/", status_code=HTTP_201_CREATED, opt={"role": "editor", "audit": "version.create"})
    async def create_draft(
        self, workflow_id: FromPath[uuid.UUID], data: JSONBody[DraftCreate | None] = None
    ) -> VersionView:
        """A new draft after the latest version: a copy of it (default) or empty."""
        copy_latest = True if data is None else data.from_latest
        return await _view(await versions.create_draft(workflow_id, copy_latest=copy_latest))

    @get("/{version_num:int}")
    async def get_version(
        self, workflow_id: FromPath[uuid.UUID], version_num: VersionNumber
    ) -> VersionView:
        return await _view(await versions.get_version(workflow_id, version_num))

    @put("/{version_num:int}/options", opt={"role": "editor", "audit": "version.set_options"})
    async def set_options(
        self,
        workflow_id: FromPath[uuid.UUID],
        version_num: VersionNumber,
        data: JSONBody[OptionsBody],
    ) -> VersionView:
        """Replace a draft's workflow options: `on_failure` (a workflow started once when an
        execution fails) and `concurrency` (`limit`, templated `key`, `overflow`); omit one
        to remove it. Checked when the draft is published."""
        options = WorkflowOptions(on_failure=data.on_failure, concurrency=data.concurrency)
        return await _view(await versions.set_draft_options(workflow_id, version_num, options))

    @get("/{version_num:int}/validation")
    async def validate_version(
        self,
        workflow_id: FromPath[uuid.UUID],
        version_num: VersionNumber,
        settings: Injected[Settings],
    ) -> ValidationReport:
        """Every problem that would stop this version from being published, without publishing:
        among them templates reading unknown steps, steps that cannot have run yet or unknown
        variables (the workflow's), subscriptions to unregistered trigger keys, and HTTP calls
        to private addresses HTTP_ALLOWED_HOSTS does not allow."""
        document = await load_document(await versions.get_version(workflow_id, version_num))
        problems = await document_problems(
            document, http_allowed_hosts=settings.http_allowed_hosts, workflow_id=workflow_id
        )
        return ValidationReport(valid=not problems, errors=problems)

    @post(
        "/{version_num:int}/publish",
        status_code=HTTP_200_OK,
        opt={"role": "editor", "audit": "version.publish"},
    )
    async def publish(
        self,
        workflow_id: FromPath[uuid.UUID],
        version_num: VersionNumber,
        resources: Injected[Resources],
    ) -> VersionView:
        """Validate, snapshot to the object store and freeze the draft; new executions use it."""
        version = await publish_version(
            workflow_id,
            version_num,
            store=resources.object_store,
            http_allowed_hosts=resources.settings.http_allowed_hosts,
        )
        return await _view(version)
