"""`/api/v1/workflows`: definitions, and whole workflows as documents (import / export)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from server.api.deps import Injected, Resources
from server.api.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    VersionQuery,
    page,
    time_and_id,
)
from server.db import publishing, workflows
from server.db.documents import load_document
from server.db.publishing import import_workflow
from server.db.variables import variables_writer
from server.db.versions import get_version, latest_version
from server.db.workflows import WorkflowSummary
from server.engine.document import Category, Description, Name, Tag, WorkflowDocument


class WorkflowCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    description: Description = ""
    category: Category = ""
    tags: list[Tag] = msgspec.field(default_factory=list)
    is_active: bool = True


class WorkflowChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; omitted ones stay as they are."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    category: Category | msgspec.UnsetType = msgspec.UNSET
    tags: list[Tag] | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET


class ImportResult(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    version_num: int
    published: bool


def _with_etag(workflow: WorkflowSummary, status_code: int = 200) -> Response[WorkflowSummary]:
    return Response(workflow, status_code=status_code, headers={"ETag": workflow.etag})


class WorkflowController(Controller):
    path = "/workflows"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("workflows",)

    @get("/")
    async def list_workflows(
        self,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        category: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        is_active: FromQuery[bool | None] = None,
    ) -> Page[WorkflowSummary]:
        """Workflow definitions, oldest first; filter by category, tag or is_active."""
        items = await workflows.list_workflows(
            limit=limit + 1,
            after=time_and_id(cursor),
            category=category,
            tag=tag,
            is_active=is_active,
        )
        return page(items, limit, lambda item: (item.created_at, item.id))

    @post("/", status_code=HTTP_201_CREATED, opt={"role": "editor", "audit": "workflow.create"})
    async def create_workflow(self, data: JSONBody[WorkflowCreate]) -> Response[WorkflowSummary]:
        """A new, empty definition; add a version with POST /workflows/{id}/versions."""
        workflow = await workflows.create_workflow(**msgspec.structs.asdict(data))
        return _with_etag(workflow, HTTP_201_CREATED)

    @get("/{workflow_id:uuid}")
    async def get_workflow(self, workflow_id: FromPath[uuid.UUID]) -> Response[WorkflowSummary]:
        return _with_etag(await workflows.get_workflow(workflow_id))

    @patch("/{workflow_id:uuid}", opt={"role": "editor", "audit": "workflow.update"})
    async def update_workflow(
        self,
        workflow_id: FromPath[uuid.UUID],
        data: JSONBody[WorkflowChange],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[WorkflowSummary]:
        """Change fields of a definition; send If-Match with its ETag to avoid lost updates."""
        changes: dict[str, Any] = {
            name: value
            for name in data.__struct_fields__
            if (value := getattr(data, name)) is not msgspec.UNSET
        }
        return _with_etag(await workflows.update_workflow(workflow_id, changes, if_match=if_match))

    @delete(
        "/{workflow_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "editor", "audit": "workflow.delete"},
    )
    async def delete_workflow(self, workflow_id: FromPath[uuid.UUID]) -> None:
        """Delete the workflow with its versions, variables, subscriptions and executions."""
        await workflows.delete_workflow(workflow_id)

    @post(
        "/import", status_code=HTTP_201_CREATED, opt={"role": "editor", "audit": "workflow.import"}
    )
    async def import_document(
        self,
        data: JSONBody[WorkflowDocument],
        resources: Injected[Resources],
        publish: FromQuery[bool] = False,
    ) -> ImportResult:
        """Create a whole workflow from one document, all or nothing; `publish=true` publishes
        it as version 1 (validated, snapshot to the object store)."""
        version = await import_workflow(
            data,
            publish=publish,
            store=resources.object_store,
            write_variables=variables_writer(resources.keyring),
            http_allowed_hosts=resources.settings.http_allowed_hosts,
        )
        return ImportResult(
            id=version.workflow_id, version_num=version.version_num, published=publish
        )

    @put(
        "/{workflow_id:uuid}/document",
        status_code=HTTP_201_CREATED,
        opt={"role": "editor", "audit": "workflow.replace_document"},
    )
    async def replace_document(
        self,
        workflow_id: FromPath[uuid.UUID],
        data: JSONBody[WorkflowDocument],
        resources: Injected[Resources],
        publish: FromQuery[bool] = False,
    ) -> ImportResult:
        """Fix forward: the document becomes the workflow's next version (or replaces its
        draft), validated like an import; its name, variables and subscriptions replace the
        workflow's (a secret given as null keeps its value). `publish=true` publishes it: new
        runs, and `POST /executions/{id}/retry?version=latest`, use it."""
        version = await publishing.replace_document(
            workflow_id,
            data,
            publish=publish,
            store=resources.object_store,
            write_variables=variables_writer(resources.keyring),
            http_allowed_hosts=resources.settings.http_allowed_hosts,
        )
        return ImportResult(
            id=version.workflow_id, version_num=version.version_num, published=publish
        )

    @get("/{workflow_id:uuid}/export")
    async def export_document(
        self, workflow_id: FromPath[uuid.UUID], version: VersionQuery = None
    ) -> WorkflowDocument:
        """The latest version (or `?version=n`) as a document; secret values read as null."""
        if version is None:
            chosen = await latest_version(workflow_id)
        else:
            chosen = await get_version(workflow_id, version)
        return await load_document(chosen)
