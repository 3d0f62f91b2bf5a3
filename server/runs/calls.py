"""`call_workflow` and `foreach` steps: child executions, started once, awaited durably.

First half (`start_call`, `start_foreach`, in the transaction that records the step): the
workflow is resolved (by id, or by a name matching exactly one workflow) to its latest
published version, the children's inputs are rendered (a foreach's with `item` and `index`),
and the children are written by one statement (`sql.START_CHILDREN`) with their parent, the
parent step's run (`parent_step_run`: the step row's id, so a retried step starts new
children) and their item index; a foreach starts `max_concurrency` of them and holds the rest
(`held`: PENDING, no entry step, no job). The step is WAITING (or, for `"wait": false`, done
at once with the child's id).

A child's end (`child_ended`, from its `execution_ended` job): for a `call_workflow` the step
resumes; for a `foreach` the next held child is admitted (each end frees one of the
`max_concurrency` slots), a failed child with `on_item_failure: fail` cancels the others, and
the step resumes once no child is unfinished. Second half (`finish_call`,
`finish_foreach`): the children's outcomes, in item order, become the step's output.

Exactly once: the children are written with the step's WAITING record or not at all; the
unique (parent_step_run, item_index) index refuses a second start; an admission locks the
held child's row (SKIP LOCKED), and a resumption the parent's, so children ending together
admit different children and resume the step once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

import msgspec
import structlog

from server import tracing
from server.engine.bounded import evaluate_bounded, render_cfg_bounded
from server.engine.document import Step, StepKind
from server.engine.flow_steps import (
    MAX_FOREACH_ITEMS,
    CallWorkflowCfg,
    ForeachCfg,
    flow_cfg,
)
from server.engine.planning import ExecutionStatus, StepStatus, success_branches
from server.engine.rendering import RenderError
from server.engine.templates import single_expression, template_variable_reads
from server.queue.client import job_arrays
from server.queue.jobs import NewJob
from server.runs import sql, store
from server.runs.admission import start_admitted
from server.runs.intake import Route, routes_from_json
from server.runs.jobs import step_job
from server.runs.step_kinds import MAX_ERROR_LENGTH, Outcome, failed
from server.runs.store import json_text
from server.runs.waits import resume_waiting_step
from server.statements import Connection

log = structlog.get_logger(__name__)

# A foreach's output holds every child's output: larger than one step's usual limit.
MAX_FOREACH_OUTPUT_BYTES: Final = 16 * 1024 * 1024


class ChildRun(msgspec.Struct, frozen=True, kw_only=True):
    """The parent side of a flow step's run: whose children these are."""

    execution_id: uuid.UUID
    step: Step
    step_run: uuid.UUID  # the step_execution row's id: the children's parent_step_run
    context: Mapping[str, Any]  # the step's template context
    secret_keys: frozenset[str]


class WorkflowNotRunnable(Exception):  # noqa: N818 - carries the reason a step fails with
    """The workflow a step names cannot run: unknown, ambiguous, inactive or unpublished."""


async def resolve_route(connection: Connection, ref: str) -> Route:
    """The route (latest published version, entry step) of the workflow `ref` names.

    Raises:
        WorkflowNotRunnable: with the reason.
    """
    found = await sql.WORKFLOWS_BY_REF.fetch(connection, ref=ref)
    by_id = [row for row in found if str(row["id"]) == ref]
    rows = by_id or found
    if not rows:
        raise WorkflowNotRunnable(f"no workflow has the id or name {ref!r}")
    if len(rows) > 1:
        raise WorkflowNotRunnable(f"several workflows are named {ref!r}; refer to one by its id")
    route = await sql.WORKFLOW_ROUTE.fetchrow(connection, workflow_id=rows[0]["id"])
    if route is None:
        raise WorkflowNotRunnable(f"workflow {ref!r} has no published version")
    if not route["is_active"]:
        raise WorkflowNotRunnable(f"workflow {ref!r} is inactive")
    return routes_from_json(route["routes"])[0]


# --- First half ----------------------------------------------------------------------------


async def start_call(connection: Connection, run: ChildRun) -> Outcome:
    """Start the one child of a `call_workflow` step; WAITING, or done at once without wait."""
    cfg = flow_cfg(run.step)
    assert isinstance(cfg, CallWorkflowCfg)  # noqa: S101 - the step's kind decides its cfg
    try:
        route = await resolve_route(connection, cfg.workflow)
        child_input = await _render_input(cfg.input, run.context, run.secret_keys)
    except (WorkflowNotRunnable, RenderError) as error:
        return failed(f"call_workflow: {error}")
    child_id = uuid.uuid4()
    await _start_children(connection, run, route, [(child_id, child_input, False)])
    output = {"execution_id": str(child_id)}
    if not cfg.wait:
        return Outcome(
            status=StepStatus.SUCCESS, output=output, branches=success_branches(run.step)
        )
    return Outcome(status=StepStatus.WAITING, output=output, input_data={"input": child_input})


async def start_foreach(connection: Connection, run: ChildRun) -> Outcome:
    """Start a `foreach` step's first `max_concurrency` children and hold the rest."""
    cfg = flow_cfg(run.step)
    assert isinstance(cfg, ForeachCfg)  # noqa: S101 - the step's kind decides its cfg
    try:
        items = await _items(cfg, run.context, run.secret_keys)
        if not items:
            return Outcome(
                status=StepStatus.SUCCESS,
                output={"count": 0, "results": [], "failed": []},
                branches=success_branches(run.step),
            )
        route = await resolve_route(connection, cfg.workflow)
        children = []
        for index, item in enumerate(items):
            context = {**run.context, "item": item, "index": index}
            child_input = await _render_input(cfg.input, context, run.secret_keys)
            children.append((uuid.uuid4(), child_input, index >= cfg.max_concurrency))
    except (WorkflowNotRunnable, RenderError) as error:
        return failed(f"foreach: {error}")
    await _start_children(connection, run, route, children)
    return Outcome(
        status=StepStatus.WAITING,
        output={"count": len(items), "workflow_id": str(route.workflow_id)},
        input_data={"count": len(items), "max_concurrency": cfg.max_concurrency},
    )


async def _items(
    cfg: ForeachCfg, context: Mapping[str, Any], secret_keys: frozenset[str]
) -> list[Any]:
    if isinstance(cfg.items, list):
        items: Any = cfg.items
    else:
        expression = single_expression(cfg.items)
        if expression is None:  # refused at publish; kept for versions published before the check
            raise RenderError("cfg.items: must be one {{ expression }} giving a list")
        if template_variable_reads(cfg.items).keys & secret_keys:
            raise RenderError("cfg.items: must not read secret variables")
        items = await evaluate_bounded(expression, context, "cfg.items")
    if callable(items):  # `trigger.items` finds the dict's method, not the key
        raise RenderError(
            "cfg.items: gave a method, not a list; a key named like a dict method (items, "
            "keys, values) is read with brackets: trigger['items']"
        )
    if not isinstance(items, list):
        raise RenderError(f"cfg.items: gave {type(items).__name__}, not a list")
    if len(items) > MAX_FOREACH_ITEMS:
        raise RenderError(f"cfg.items: {len(items)} items, over the limit of {MAX_FOREACH_ITEMS}")
    return items


async def _render_input(value: Any, context: Mapping[str, Any], secret_keys: frozenset[str]) -> Any:
    """A child's input; one rendered from a secret variable is refused (the child's trigger is
    stored and shown: pass secrets as the child workflow's own secret variables)."""
    rendered = await render_cfg_bounded({"input": value}, context, secret_keys)
    if rendered.tainted:
        raise RenderError(
            "cfg.input: reads a secret variable, and a child's input is stored and shown; give "
            "the child workflow its own secret variable instead"
        )
    return rendered.value["input"]


async def _start_children(
    connection: Connection,
    run: ChildRun,
    route: Route,
    children: list[tuple[uuid.UUID, Any, bool]],
) -> None:
    """Write the children (id, input, held) and the started ones' entry steps and jobs."""
    jobs = [step_job(child, route.step_id, route.entry) for child, _, held in children if not held]
    await sql.START_CHILDREN.fetchrow(
        connection,
        workflow_id=route.workflow_id,
        version_id=route.version_id,
        parent_execution_id=run.execution_id,
        parent_step_key=run.step.key,
        parent_step_run=run.step_run,
        execution_ids=[child for child, _, _ in children],
        inputs=[json_text(child_input) or "null" for _, child_input, _ in children],
        item_indexes=list(range(len(children))),
        held=[held for _, _, held in children],
        entry_step_id=route.step_id,
        entry_step_key=route.entry.key,
        # The calling step's span: the children's steps join the parent's trace under it.
        traceparent=tracing.current_traceparent() if tracing.ENABLED else None,
        **job_arrays(jobs),
    )


# --- A child ended -------------------------------------------------------------------------


class EndedChild(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: uuid.UUID
    status: ExecutionStatus
    parent_execution_id: uuid.UUID
    parent_step_run: uuid.UUID


async def child_ended(
    connection: Connection, child: EndedChild, *, run_here: bool = False
) -> NewJob | None:
    """Move the parent's waiting step on after one of its children ended (see the module
    docstring); call in the transaction of the child's `execution_ended` job. With
    `run_here`, a foreach item admitted is not enqueued: its entry step's job is returned for
    the caller to hand its own job on to (one queue trip less per item).

    No lock on the parent is taken to admit the next item: its children's ends would queue on
    it one by one (the fan-out's throughput was capped there). Each end frees one slot and
    admits one held child, so at most `max_concurrency` run whatever the interleaving
    (`sql.CHILD_ENDED` reads the step and admits in one round trip). When it admits none and no child is left unfinished, the step resumes; the
    end that commits last always sees every other child finished, and the resume itself runs
    under the parent's row lock and happens once."""
    row = await sql.CHILD_ENDED.fetchrow(
        connection,
        step_run=child.parent_step_run,
        execution_id=child.parent_execution_id,
        child_succeeded=child.status is ExecutionStatus.SUCCESS,
    )
    if row is None or row["status"] != StepStatus.WAITING:
        return None  # resumed already, the parent ended or is gone: nothing waits for it
    if row["admitted_id"] is not None:  # a foreach's next item takes the freed slot
        admitted = [(row["admitted_id"], row["admitted_version_id"])]
        jobs = await start_admitted(connection, admitted, enqueue=not run_here)
        return jobs[0] if run_here else None
    step = Step(
        key=row["step_key"], kind=StepKind(row["kind"]), cfg=msgspec.json.decode(row["cfg"])
    )
    step_id: uuid.UUID = row["step_id"]
    if step.kind is StepKind.CALL_WORKFLOW:
        await resume_waiting_step(
            connection, child.parent_execution_id, step_id, step, resumed_by="child"
        )
        return None
    cfg = flow_cfg(step)
    assert isinstance(cfg, ForeachCfg)  # noqa: S101 - the step is a call or a foreach
    if child.status is not ExecutionStatus.SUCCESS and cfg.on_item_failure == "fail":
        await store.cancel_children(
            connection, child.parent_execution_id, step_run=child.parent_step_run,
            reason=f"cancelled: item execution {child.execution_id} ended {child.status}",
        )  # fmt: skip
        await resume_waiting_step(
            connection, child.parent_execution_id, step_id, step, resumed_by="children"
        )
        return None
    if not await sql.UNFINISHED_CHILDREN.fetchval(connection, step_run=child.parent_step_run):
        await resume_waiting_step(
            connection, child.parent_execution_id, step_id, step, resumed_by="children"
        )
    return None


# --- Second half ---------------------------------------------------------------------------


class _Child(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    item_index: int
    status: str
    error: str | None
    output: Any


async def _children(connection: Connection, step_run: uuid.UUID) -> list[_Child]:
    rows = await sql.CHILD_OUTCOMES.fetch(connection, step_run=step_run)
    return [
        _Child(
            id=row["id"],
            item_index=row["item_index"],
            status=row["status"],
            error=row["error"],
            output=None if row["output"] is None else msgspec.json.decode(row["output"]),
        )
        for row in rows
    ]


async def finish_call(connection: Connection, run: ChildRun) -> Outcome:
    """A resumed `call_workflow`: the child's outcome; a child not SUCCESS fails the step."""
    children = await _children(connection, run.step_run)
    if not children:
        return failed("call_workflow: its child execution is gone (deleted with its workflow)")
    child = children[0]
    output = {"execution_id": str(child.id), "status": child.status, "output": child.output}
    if child.status != ExecutionStatus.SUCCESS:
        reason = f": {child.error}" if child.error else ""
        return Outcome(
            status=StepStatus.FAILED,
            output=output,
            error=f"child execution {child.id} ended {child.status}{reason}"[:MAX_ERROR_LENGTH],
            branches=frozenset({"error"}),
        )
    return Outcome(status=StepStatus.SUCCESS, output=output, branches=success_branches(run.step))


async def finish_foreach(connection: Connection, run: ChildRun) -> Outcome:
    """A resumed `foreach`: every child's output in item order and the failed indices."""
    cfg = flow_cfg(run.step)
    assert isinstance(cfg, ForeachCfg)  # noqa: S101 - the step's kind decides its cfg
    children = await _children(connection, run.step_run)
    if [child.item_index for child in children] != list(range(len(children))):
        return failed(
            "foreach: some of its child executions are gone (deleted with their workflow)"
        )
    failed_items = [child for child in children if child.status != ExecutionStatus.SUCCESS]
    output = {
        "count": len(children),
        "results": [child.output for child in children],
        "failed": [child.item_index for child in failed_items],
    }
    size = len(msgspec.json.encode(output))
    if size > MAX_FOREACH_OUTPUT_BYTES:
        return failed(
            f"foreach: the children's outputs are {size} bytes together, over the "
            f"{MAX_FOREACH_OUTPUT_BYTES}-byte limit; have the child workflow return less"
        )
    if failed_items and cfg.on_item_failure == "fail":
        first = next(
            (child for child in failed_items if child.status == ExecutionStatus.FAILED),
            failed_items[0],
        )
        reason = f": {first.error}" if first.error else ""
        return Outcome(
            status=StepStatus.FAILED,
            output=output,
            error=(f"item {first.item_index} (execution {first.id}) ended {first.status}{reason}")[
                :MAX_ERROR_LENGTH
            ],
            branches=frozenset({"error"}),
        )
    return Outcome(status=StepStatus.SUCCESS, output=output, branches=success_branches(run.step))
