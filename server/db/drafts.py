"""Editing a draft version's graph: steps and edges, each change locked against publishing.

Every function runs one transaction that starts with `lock_draft` (the version row `FOR
UPDATE`), so edits and publishes of one version serialize and a published version never
changes. Step content is validated by the caller (`server.engine.validation.validate_step`); edge
rules that need the rest of the graph (known steps, branch keys, cycles) are checked here.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import msgspec

from server.db.pool import transaction
from server.db.tables import WorkflowEdge, WorkflowStep
from server.db.versions import (
    EdgeRecord,
    StepRecord,
    get_version,
    lock_draft,
    step_record,
    version_detail,
)
from server.engine.document import Edge, Step
from server.engine.validation import Problem, allowed_branches, steps_in_cycles
from server.errors import ConflictError, NotFoundError, ValidationError


async def add_step(workflow_id: uuid.UUID, version_num: int, step: Step) -> StepRecord:
    async with transaction():
        version = await lock_draft(workflow_id, version_num)
        detail = await version_detail(version)
        if any(existing.key == step.key for existing in detail.steps):
            raise ConflictError(
                f"version {version_num} already has a step {step.key!r}; choose another key"
            )
        row = WorkflowStep(
            version_id=version.id,
            step_key=step.key,
            name=step.name,
            kind=step.kind.value,
            action_key=step.action_key,
            cfg=json.dumps(step.cfg),
            position=max((s.position for s in detail.steps), default=-1) + 1,
        )
        await row.save()
        return await step_record(version.id, row.id)


async def update_step(
    workflow_id: uuid.UUID, version_num: int, step_id: uuid.UUID, step: Step
) -> StepRecord:
    """Replace a step's content (the caller merged a PATCH into the current step)."""
    async with transaction():
        version = await lock_draft(workflow_id, version_num)
        detail = await version_detail(version)
        current = next((s for s in detail.steps if s.id == step_id), None)
        if current is None:
            raise NotFoundError(f"step {step_id} not found in version {version_num}")
        if any(s.key == step.key and s.id != step_id for s in detail.steps):
            raise ConflictError(
                f"version {version_num} already has a step {step.key!r}; choose another key"
            )
        values: dict[Any, Any] = {
            WorkflowStep.step_key: step.key,
            WorkflowStep.name: step.name,
            WorkflowStep.kind: step.kind.value,
            WorkflowStep.action_key: step.action_key,
            WorkflowStep.cfg: json.dumps(step.cfg),
        }
        await WorkflowStep.update(values).where(WorkflowStep.id == step_id).run()
        return await step_record(version.id, step_id)


async def get_step(workflow_id: uuid.UUID, version_num: int, step_id: uuid.UUID) -> StepRecord:
    version = await get_version(workflow_id, version_num)
    return await step_record(version.id, step_id)


async def delete_step(workflow_id: uuid.UUID, version_num: int, step_id: uuid.UUID) -> None:
    """Delete a step and (by cascade) the edges touching it."""
    async with transaction():
        version = await lock_draft(workflow_id, version_num)
        deleted = await (
            WorkflowStep.delete()
            .where((WorkflowStep.id == step_id) & (WorkflowStep.version_id == version.id))
            .returning(WorkflowStep.id)
            .run()
        )
        if not deleted:
            raise NotFoundError(f"step {step_id} not found in version {version_num}")


async def add_edge(workflow_id: uuid.UUID, version_num: int, edge: Edge) -> EdgeRecord:
    async with transaction():
        version = await lock_draft(workflow_id, version_num)
        detail = await version_detail(version)
        steps = {s.key: s for s in detail.steps}
        _check_edge(edge, steps, [Edge(source=e.source, target=e.target) for e in detail.edges])
        try:
            row = WorkflowEdge(
                version_id=version.id,
                from_step_id=steps[edge.source].id,
                to_step_id=steps[edge.target].id,
                branch_key=edge.branch_key,
            )
            await row.save()
        except asyncpg.UniqueViolationError:
            raise ConflictError(
                f"an edge {edge.source} -> {edge.target} with branch {edge.branch_key!r} exists"
            ) from None
        detail = await version_detail(version)
        return next(e for e in detail.edges if e.id == row.id)


async def delete_edge(workflow_id: uuid.UUID, version_num: int, edge_id: uuid.UUID) -> None:
    async with transaction():
        version = await lock_draft(workflow_id, version_num)
        deleted = await (
            WorkflowEdge.delete()
            .where((WorkflowEdge.id == edge_id) & (WorkflowEdge.version_id == version.id))
            .returning(WorkflowEdge.id)
            .run()
        )
        if not deleted:
            raise NotFoundError(f"edge {edge_id} not found in version {version_num}")


def _check_edge(edge: Edge, steps: dict[str, StepRecord], existing: list[Edge]) -> None:
    where = f"edge ({edge.source} -> {edge.target})"
    problems = [
        Problem(field=where, message=f"unknown step {key!r}; add the step first")
        for key in (edge.source, edge.target)
        if key not in steps
    ]
    if not problems and edge.source == edge.target:
        problems.append(Problem(field=where, message="an edge cannot lead from a step to itself"))
    if not problems:
        source = steps[edge.source]
        allowed = allowed_branches(source.as_step())
        if edge.branch_key not in allowed:
            problems.append(
                Problem(
                    field=f"{where}.branch_key",
                    message=f"{edge.branch_key!r} is not a branch of {source.kind} step "
                    f"{source.key!r}; use one of {', '.join(sorted(allowed))}",
                )
            )
        if not problems and steps_in_cycles(steps, [*existing, edge]):
            problems.append(
                Problem(field=where, message="this edge would close a cycle; workflows are acyclic")
            )
    if problems:
        raise ValidationError(
            "the edge is not valid", [msgspec.structs.asdict(p) for p in problems]
        )
