"""What one execution's page shows, read with the API's own queries: the execution and its
steps (`get_execution_detail`: inputs, outputs and errors as stored, secrets already redacted
as the API shows them), its version's graph with each step's status, a timeline of every
attempt, its parent, its children and the event that started it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Final

import asyncpg
import msgspec

from server.console.graph import Drawing, GraphEdge, GraphNode, draw
from server.db import workflows
from server.db.events import EventView, get_event
from server.db.execution_queries import (
    ExecutionDetail,
    ExecutionView,
    get_execution_detail,
    list_executions,
)
from server.db.versions import VersionDetail, list_versions, version_detail
from server.errors import NotFoundError

TIMELINE_WIDTH: Final = 1000
TIMELINE_ROW: Final = 22
CHILDREN_SHOWN: Final = 50
UNFINISHED: Final = frozenset({"PENDING", "RUNNING", "WAITING"})


class TimelineBar(msgspec.Struct, frozen=True, kw_only=True):
    step_key: str
    attempt: int
    status: str
    x: float
    width: float
    y: float
    duration_ms: float | None
    error: str | None


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    bars: list[TimelineBar]
    height: float
    span_ms: float


def graph_of(detail: VersionDetail) -> Drawing:
    nodes = [
        GraphNode(key=step.key, kind=step.kind.value, detail=step.action_key or step.kind.value)
        for step in detail.steps
    ]
    edges = [
        GraphEdge(source=edge.source, target=edge.target, branch_key=edge.branch_key)
        for edge in detail.edges
    ]
    return draw(nodes, edges)


def timeline_of(execution: ExecutionDetail, now: dt.datetime) -> Timeline:
    """One bar per attempt, placed on the execution's span (a running step's up to now)."""
    spans: list[tuple[str, int, str, dt.datetime, dt.datetime, float | None, str | None]] = []
    for step in execution.steps:
        for attempt in step.attempts_history:
            start = attempt.started_at or attempt.finished_at
            spans.append(
                (step.step_key, attempt.attempt, attempt.status, start, attempt.finished_at,
                 attempt.duration_ms, attempt.error)
            )  # fmt: skip
        if step.status in UNFINISHED and step.started_at is not None:
            spans.append(
                (step.step_key, step.attempts, step.status, step.started_at, now, None, None)
            )
    if not spans:
        return Timeline(bars=[], height=0, span_ms=0)
    origin = min(span[3] for span in spans)
    end = max(span[4] for span in spans)
    total_ms = max((end - origin).total_seconds() * 1000, 1.0)
    scale = TIMELINE_WIDTH / total_ms
    bars = []
    for row, (key, number, status, start, finish, duration, error) in enumerate(spans):
        offset = (start - origin).total_seconds() * 1000
        length = max((finish - start).total_seconds() * 1000, 0.0)
        bars.append(
            TimelineBar(
                step_key=key, attempt=number, status=status, x=round(offset * scale, 1),
                width=round(max(length * scale, 2.0), 1), y=row * TIMELINE_ROW,
                duration_ms=duration if duration is not None else length, error=error,
            )
        )  # fmt: skip
    return Timeline(bars=bars, height=len(bars) * TIMELINE_ROW, span_ms=total_ms)


async def execution_page_context(pool: asyncpg.Pool, execution_id: uuid.UUID) -> dict[str, Any]:
    """Everything `execution.html` needs; NotFoundError when there is no such execution."""
    execution = await get_execution_detail(execution_id)
    versions = await list_versions(execution.workflow_id)
    version = next((v for v in versions if v.id == execution.version_id), None)
    if version is None:  # cannot happen: a version with executions is never deleted
        raise NotFoundError(f"execution {execution_id}'s version is gone")
    detail = await version_detail(version)
    workflow = await workflows.get_workflow(execution.workflow_id)
    latest_published = max(
        (v.version_num for v in versions if v.status == "published"), default=None
    )
    children: list[ExecutionView] = []
    if execution.children.total:
        children = await list_executions(limit=CHILDREN_SHOWN, before=None, parent_id=execution_id)
    return {
        "execution": execution,
        "workflow": workflow,
        "version": version,
        "newer_version": latest_published is not None and latest_published > version.version_num,
        "steps_by_key": {step.key: step for step in detail.steps},
        "statuses": {step.step_key: step.status for step in execution.steps},
        "graph": graph_of(detail),
        "timeline": timeline_of(execution, dt.datetime.now(dt.UTC)),
        "event": await _event(pool, execution.trigger_event_id),
        "children": children,
        "live": execution.status in UNFINISHED,
    }


async def _event(pool: asyncpg.Pool, event_id: uuid.UUID | None) -> EventView | None:
    if event_id is None:
        return None
    async with pool.acquire() as connection:
        try:
            return await get_event(connection, event_id)
        except NotFoundError:
            return None  # pruned by retention
