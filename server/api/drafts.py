"""`.../versions/{n}/steps` and `.../edges`: editing a draft's graph.

Each step is validated when saved (kind, action, cfg against the action's schema, templates
and expressions), each edge against the graph (known steps, branch keys, no cycles); the
whole-graph rules (exactly one entry step) are checked at publish, and any time through
`GET .../validation`. A published version answers 409 pointing to a new draft.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from server.api.pagination import Page, VersionNumber
from server.db import drafts, versions
from server.db.registry import action_schemas
from server.db.versions import EdgeRecord, StepRecord
from server.engine.document import ActionKey, Edge, Step, StepKey, StepKind
from server.engine.validation import validate_step
from server.errors import ValidationError


class StepChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields of a step to change; omitted ones stay as they are."""

    key: StepKey | msgspec.UnsetType = msgspec.UNSET
    name: str | msgspec.UnsetType = msgspec.UNSET
    kind: StepKind | msgspec.UnsetType = msgspec.UNSET
    action_key: ActionKey | msgspec.UnsetType | None = msgspec.UNSET
    cfg: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


async def _checked(step: Step) -> Step:
    problems = await asyncio.to_thread(validate_step, step, await action_schemas())
    if problems:
        raise ValidationError(
            f"step {step.key!r} is not valid; fix each problem listed in errors",
            [msgspec.structs.asdict(problem) for problem in problems],
        )
    return step


class DraftController(Controller):
    path = "/workflows/{workflow_id:uuid}/versions/{version_num:int}"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("versions",)

    @get("/steps")
    async def list_steps(
        self, workflow_id: FromPath[uuid.UUID], version_num: VersionNumber
    ) -> Page[StepRecord]:
        version = await versions.get_version(workflow_id, version_num)
        return Page(items=(await versions.version_detail(version)).steps, next_cursor=None)

    @post("/steps", status_code=HTTP_201_CREATED, opt={"role": "editor", "audit": "step.create"})
    async def add_step(
        self, workflow_id: FromPath[uuid.UUID], version_num: VersionNumber, data: JSONBody[Step]
    ) -> StepRecord:
        return await drafts.add_step(workflow_id, version_num, await _checked(data))

    @get("/steps/{step_id:uuid}")
    async def get_step(
        self,
        workflow_id: FromPath[uuid.UUID],
        version_num: VersionNumber,
        step_id: FromPath[uuid.UUID],
    ) -> StepRecord:
        return await drafts.get_step(workflow_id, version_num, step_id)

    @patch("/steps/{step_id:uuid}", opt={"role": "editor", "audit": "step.update"})
    async def update_step(
        self,
        workflow_id: FromPath[uuid.UUID],
        version_num: VersionNumber,
        step_id: FromPath[uuid.UUID],
        data: JSONBody[StepChange],
    ) -> StepRecord:
        current = (await drafts.get_step(workflow_id, version_num, step_id)).as_step()
        changes = {
            name: value
            for name in data.__struct_fields__
            if (value := getattr(data, name)) is not msgspec.UNSET
        }
        step = await _checked(msgspec.structs.replace(current, **changes))
        return await drafts.update_step(workflow_id, version_num, step_id, step)

    @delete(
        "/steps/{step_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "editor", "audit": "step.delete"},
    )
    async def delete_step(
        self,
        workflow_id: FromPath[uuid.UUID],
        version_num: VersionNumber,
        step_id: FromPath[uuid.UUID],
    ) -> None:
        """Delete a step and the edges touching it."""
        await drafts.delete_step(workflow_id, version_num, step_id)

    @get("/edges")
    async def list_edges(
        self, workflow_id: FromPath[uuid.UUID], version_num: VersionNumber
    ) -> Page[EdgeRecord]:
        version = await versions.get_version(workflow_id, version_num)
        return Page(items=(await versions.version_detail(version)).edges, next_cursor=None)

    @post("/edges", status_code=HTTP_201_CREATED, opt={"role": "editor", "audit": "edge.create"})
    async def add_edge(
        self, workflow_id: FromPath[uuid.UUID], version_num: VersionNumber, data: JSONBody[Edge]
    ) -> EdgeRecord:
        """Connect two steps by key: `{"from", "to", "branch_key"}`."""
        return await drafts.add_edge(workflow_id, version_num, data)

    @delete(
        "/edges/{edge_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "editor", "audit": "edge.delete"},
    )
    async def delete_edge(
        self,
        workflow_id: FromPath[uuid.UUID],
        version_num: VersionNumber,
        edge_id: FromPath[uuid.UUID],
    ) -> None:
        await drafts.delete_edge(workflow_id, version_num, edge_id)
