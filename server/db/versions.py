"""Workflow versions and their draft graph: steps and edges (`workflow_version`, `_step`, `_edge`).

A workflow has at most one draft at a time; published versions are immutable. Every change to
a draft runs in a transaction that first locks the version row (`FOR UPDATE`), so an edit and a
publish of the same version serialize: an edit either lands before the publish reads the draft,
or finds the version published and is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import msgspec

from server.db.pool import transaction
from server.db.tables import WorkflowDefinition, WorkflowEdge, WorkflowStep, WorkflowVersion
from server.engine.document import Edge, Step, StepKind, WorkflowOptions
from server.errors import ConflictError, NotFoundError

DRAFT = "draft"
PUBLISHED = "published"


class VersionSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    workflow_id: uuid.UUID
    version_num: int
    status: str
    s3_key: str | None
    created_at: dt.datetime
    published_at: dt.datetime | None


class StepRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    key: str
    name: str
    kind: StepKind
    action_key: str | None
    cfg: dict[str, Any]
    position: int

    def as_step(self) -> Step:
        return Step(
            key=self.key, name=self.name, kind=self.kind, action_key=self.action_key, cfg=self.cfg
        )


class EdgeRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    source: str = msgspec.field(name="from")
    target: str = msgspec.field(name="to")
    branch_key: str
    from_step_id: uuid.UUID
    to_step_id: uuid.UUID

    def as_edge(self) -> Edge:
        return Edge(source=self.source, target=self.target, branch_key=self.branch_key)


class VersionDetail(msgspec.Struct, frozen=True, kw_only=True):
    version: VersionSummary
    steps: list[StepRecord]
    edges: list[EdgeRecord]
    options: WorkflowOptions = WorkflowOptions()


_VERSION_COLUMNS = (
    WorkflowVersion.id,
    WorkflowVersion.workflow_id,
    WorkflowVersion.version_num,
    WorkflowVersion.status,
    WorkflowVersion.s3_key,
    WorkflowVersion.created_at,
    WorkflowVersion.published_at,
)


async def list_versions(workflow_id: uuid.UUID) -> list[VersionSummary]:
    await require_workflow(workflow_id)
    rows = await (
        WorkflowVersion.select(*_VERSION_COLUMNS)
        .where(WorkflowVersion.workflow_id == workflow_id)
        .order_by(WorkflowVersion.version_num)
        .run()
    )
    return [msgspec.convert(row, VersionSummary) for row in rows]


async def get_version(
    workflow_id: uuid.UUID, version_num: int, *, lock: bool = False
) -> VersionSummary:
    """One version; `lock=True` (inside a transaction) locks its row until commit."""
    query = WorkflowVersion.select(*_VERSION_COLUMNS).where(
        (WorkflowVersion.workflow_id == workflow_id) & (WorkflowVersion.version_num == version_num)
    )
    if lock:
        query = query.lock_rows("UPDATE")
    row = await query.first().run()
    if row is None:
        await require_workflow(workflow_id)
        raise NotFoundError(f"workflow {workflow_id} has no version {version_num}")
    return msgspec.convert(row, VersionSummary)


async def latest_version(workflow_id: uuid.UUID, *, published_only: bool = False) -> VersionSummary:
    query = WorkflowVersion.select(*_VERSION_COLUMNS).where(
        WorkflowVersion.workflow_id == workflow_id
    )
    if published_only:
        query = query.where(WorkflowVersion.status == PUBLISHED)
    row = await query.order_by(WorkflowVersion.version_num, ascending=False).first().run()
    if row is None:
        await require_workflow(workflow_id)
        kind = "published version" if published_only else "version"
        raise NotFoundError(f"workflow {workflow_id} has no {kind} yet")
    return msgspec.convert(row, VersionSummary)


def _step_columns() -> tuple[Any, ...]:
    """The columns of a StepRecord (built per query: Piccolo aliases are per-query objects)."""
    step = WorkflowStep
    return (
        step.id, step.step_key.as_alias("key"), step.name, step.kind, step.action_key,
        step.cfg, step.position,
    )  # fmt: skip


async def step_record(version_id: uuid.UUID, step_id: uuid.UUID) -> StepRecord:
    """One step of a version; NotFoundError when the version has no such step."""
    row = await (
        WorkflowStep.select(*_step_columns())
        .where((WorkflowStep.id == step_id) & (WorkflowStep.version_id == version_id))
        .output(load_json=True)
        .first()
        .run()
    )
    if row is None:
        raise NotFoundError(f"step {step_id} not found")
    return msgspec.convert(row, StepRecord)


async def version_detail(version: VersionSummary) -> VersionDetail:
    steps = await (
        WorkflowStep.select(*_step_columns())
        .where(WorkflowStep.version_id == version.id)
        .order_by(WorkflowStep.position)
        .order_by(WorkflowStep.step_key)
        .output(load_json=True)
        .run()
    )
    edges = await (
        WorkflowEdge.select(
            WorkflowEdge.id,
            WorkflowEdge.from_step_id.step_key.as_alias("from"),
            WorkflowEdge.to_step_id.step_key.as_alias("to"),
            WorkflowEdge.branch_key,
            WorkflowEdge.from_step_id,
            WorkflowEdge.to_step_id,
        )
        .where(WorkflowEdge.version_id == version.id)
        .run()
    )
    edges.sort(key=lambda e: (e["from"], e["to"], e["branch_key"]))
    return VersionDetail(
        version=version,
        steps=[msgspec.convert(row, StepRecord) for row in steps],
        edges=[msgspec.convert(row, EdgeRecord) for row in edges],
        options=await version_options(version.id),
    )


async def version_options(version_id: uuid.UUID) -> WorkflowOptions:
    row = await (
        WorkflowVersion.select(WorkflowVersion.options)
        .where(WorkflowVersion.id == version_id)
        .output(load_json=True)
        .first()
        .run()
    )
    return msgspec.convert((row or {}).get("options") or {}, WorkflowOptions)


async def write_options(version_id: uuid.UUID, options: WorkflowOptions) -> None:
    """Store a version's options; call inside a transaction that locked its draft."""
    await (
        WorkflowVersion.update({WorkflowVersion.options: msgspec.json.encode(options).decode()})
        .where(WorkflowVersion.id == version_id)
        .run()
    )


async def set_draft_options(
    workflow_id: uuid.UUID, version_num: int, options: WorkflowOptions
) -> VersionSummary:
    """Replace a draft's workflow options (`on_failure`, `concurrency`)."""
    async with transaction():
        draft = await lock_draft(workflow_id, version_num)
        await write_options(draft.id, options)
    return draft


async def create_draft(workflow_id: uuid.UUID, *, copy_latest: bool) -> VersionSummary:
    """A new draft numbered after the latest version, empty or a copy of the latest one."""
    async with transaction():
        await require_workflow(workflow_id, lock=True)  # serializes concurrent draft creation
        latest = await (
            WorkflowVersion.select(*_VERSION_COLUMNS)
            .where(WorkflowVersion.workflow_id == workflow_id)
            .order_by(WorkflowVersion.version_num, ascending=False)
            .first()
            .run()
        )
        if latest is not None and latest["status"] == DRAFT:
            raise ConflictError(
                f"workflow {workflow_id} already has draft version {latest['version_num']}; "
                "edit or publish it instead of creating another"
            )
        number = 1 if latest is None else latest["version_num"] + 1
        draft = WorkflowVersion(workflow_id=workflow_id, version_num=number, status=DRAFT)
        await draft.save()
        if latest is not None and copy_latest:
            source = await version_detail(msgspec.convert(latest, VersionSummary))
            await insert_graph(
                draft.id,
                [step.as_step() for step in source.steps],
                [edge.as_edge() for edge in source.edges],
            )
            await write_options(draft.id, source.options)
        return await get_version(workflow_id, number)


async def insert_graph(version_id: uuid.UUID, steps: list[Step], edges: list[Edge]) -> None:
    """Insert a version's steps (in order) and edges; call inside a transaction."""
    ids = {step.key: uuid.uuid4() for step in steps}
    if steps:
        await WorkflowStep.insert(
            *[
                WorkflowStep(
                    id=ids[step.key],
                    version_id=version_id,
                    step_key=step.key,
                    name=step.name,
                    kind=step.kind.value,
                    action_key=step.action_key,
                    cfg=json.dumps(step.cfg),
                    position=index,
                )
                for index, step in enumerate(steps)
            ]
        ).run()
    if edges:
        await WorkflowEdge.insert(
            *[
                WorkflowEdge(
                    version_id=version_id,
                    from_step_id=ids[edge.source],
                    to_step_id=ids[edge.target],
                    branch_key=edge.branch_key,
                )
                for edge in edges
            ]
        ).run()


async def lock_draft(workflow_id: uuid.UUID, version_num: int) -> VersionSummary:
    """Lock a version for editing (inside a transaction); published ones answer 409."""
    version = await get_version(workflow_id, version_num, lock=True)
    if version.status != DRAFT:
        raise ConflictError(
            f"version {version_num} of workflow {workflow_id} is published and cannot change; "
            f"create a new draft with POST /api/v1/workflows/{workflow_id}/versions"
        )
    return version


async def require_workflow(workflow_id: uuid.UUID, *, lock: bool = False) -> None:
    query = WorkflowDefinition.select(WorkflowDefinition.id).where(
        WorkflowDefinition.id == workflow_id
    )
    if lock:
        query = query.lock_rows("UPDATE")
    if await query.first().run() is None:
        raise NotFoundError(f"workflow {workflow_id} not found")
