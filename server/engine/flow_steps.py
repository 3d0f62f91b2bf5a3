"""The flow steps' settings (DESIGN §5.1): `call_workflow`, `foreach` and `wait_for_event`.

Each kind's `cfg` is a struct here; decoding a step's cfg with it checks it (msgspec names the
failing field), at publish time (`flow_problems`) and again when the step runs (`flow_cfg`),
so a published version always decodes. Which branches each kind may take is here too; the
workflows a document refers to (to check at publish that they exist and that no workflow
calls itself, directly or through others) are listed by `workflow_references` and checked by
`call_cycle`. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from server.engine.document import Step, StepKind, TriggerKey, WorkflowDocument, WorkflowRef
from server.engine.problems import Problem
from server.engine.templates import is_template, single_expression

MAX_FOREACH_ITEMS: Final = 10_000
MAX_FOREACH_CONCURRENCY: Final = 1_000
DEFAULT_FOREACH_CONCURRENCY: Final = 10
MAX_WAIT_SECONDS: Final = 366 * 24 * 3600


class CallWorkflowCfg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Start one child execution with `input` as its trigger; with `wait`, until it ends."""

    workflow: WorkflowRef
    input: Any = msgspec.field(default_factory=dict)
    wait: bool = True


class ForeachCfg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One child per item of `items` (a list, or one `{{ expression }}` giving one), at most
    `max_concurrency` unfinished at once; `input` sees `item` and `index`."""

    items: list[Any] | str
    workflow: WorkflowRef
    input: Any = msgspec.field(default_factory=dict)
    max_concurrency: Annotated[int, Meta(ge=1, le=MAX_FOREACH_CONCURRENCY)] = (
        DEFAULT_FOREACH_CONCURRENCY
    )
    on_item_failure: Literal["fail", "continue"] = "fail"


class WaitForEventCfg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Wait for an event of `trigger_key` whose correlation key is the rendered
    `correlation_key`; after `timeout_seconds` (if set) take the `timeout` branch."""

    trigger_key: TriggerKey
    correlation_key: Annotated[str, Meta(min_length=1, max_length=1000)]
    timeout_seconds: Annotated[float, Meta(gt=0, le=MAX_WAIT_SECONDS)] | None = None


FlowCfg = CallWorkflowCfg | ForeachCfg | WaitForEventCfg

_CFG_TYPES: Final[Mapping[StepKind, type[FlowCfg]]] = {
    StepKind.CALL_WORKFLOW: CallWorkflowCfg,
    StepKind.FOREACH: ForeachCfg,
    StepKind.WAIT_FOR_EVENT: WaitForEventCfg,
}
_EXAMPLES: Final[Mapping[StepKind, str]] = {
    StepKind.CALL_WORKFLOW: '{"workflow": "Enrich lead", "input": {...}, "wait": true}',
    StepKind.FOREACH: (
        '{"items": "{{ trigger.leads }}", "workflow": "Process lead", '
        '"input": {"lead": "{{ item }}"}, "max_concurrency": 10, "on_item_failure": "fail"}'
    ),
    StepKind.WAIT_FOR_EVENT: (
        '{"trigger_key": "approvals", "correlation_key": "{{ trigger.order_id }}", '
        '"timeout_seconds": 86400}'
    ),
}
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def flow_cfg(step: Step) -> FlowCfg:
    """The flow step's settings (raises msgspec.ValidationError when they are invalid)."""
    return msgspec.convert(step.cfg, _CFG_TYPES[step.kind])


def flow_problems(step: Step, where: str) -> list[Problem]:
    """Problems of a flow step's cfg, each naming its field."""
    try:
        cfg = flow_cfg(step)
    except msgspec.ValidationError as error:
        message = str(error)
        found = _AT.search(message)
        path = found["path"] if found else ""
        field = f"{where}.cfg" + (f".{path}" if path and not path.startswith("[") else path)
        text = _AT.sub("", message)
        return [
            Problem(field=field, message=f"{text}; a {step.kind} step takes {_EXAMPLES[step.kind]}")
        ]
    if isinstance(cfg, ForeachCfg):
        return _items_problems(cfg.items, f"{where}.cfg.items")
    return []


def _items_problems(items: list[Any] | str, field: str) -> list[Problem]:
    if isinstance(items, list):
        if len(items) > MAX_FOREACH_ITEMS:
            return [
                Problem(
                    field=field,
                    message=f"{len(items)} items; a foreach takes at most {MAX_FOREACH_ITEMS}",
                )
            ]
        return []
    if not is_template(items):
        return [
            Problem(
                field=field,
                message="items must be a list, or one template giving a list such as "
                '"{{ trigger.leads }}"; a literal string is not a list',
            )
        ]
    if single_expression(items) is None:
        return [
            Problem(
                field=field,
                message="items must be exactly one {{ expression }} giving a list (text around "
                'it would make a string), such as "{{ trigger.leads }}"',
            )
        ]
    return []


def flow_branches(step: Step) -> frozenset[str]:
    """Branch keys an edge leaving a flow step may carry: `default` and `error`, and for a
    `wait_for_event` with a timeout, `timeout`."""
    if step.kind is StepKind.WAIT_FOR_EVENT and step.cfg.get("timeout_seconds") is not None:
        return frozenset({"default", "error", "timeout"})
    return frozenset({"default", "error"})


def workflow_references(document: WorkflowDocument) -> Iterator[tuple[str, str, bool]]:
    """(field, workflow reference, whether it is a call) of every workflow the document names:
    call_workflow and foreach steps (calls) and on_failure (not a call: a failure workflow's own
    failure starts nothing, so it may be the workflow itself)."""
    for step in document.steps:
        if step.kind in (StepKind.CALL_WORKFLOW, StepKind.FOREACH):
            ref = step.cfg.get("workflow")
            if isinstance(ref, str) and ref:
                yield f"steps[{step.key}].cfg.workflow", ref, True
    if document.on_failure is not None:
        yield "on_failure.workflow", document.on_failure.workflow, False


def call_cycle(start: str, calls: Mapping[str, frozenset[str]]) -> list[str] | None:
    """A path of calls from `start` back to it (workflow ids), or None. `calls` maps each
    workflow to those its latest published version calls (and `start` to the new document's)."""
    path: list[str] = [start]
    seen: set[str] = set()

    def walk(node: str) -> bool:
        for callee in sorted(calls.get(node, frozenset())):
            if callee == start:
                path.append(callee)
                return True
            if callee in seen:
                continue
            seen.add(callee)
            path.append(callee)
            if walk(callee):
                return True
            path.pop()
        return False

    return path if walk(start) else None


class WorkflowCatalog(msgspec.Struct, frozen=True, kw_only=True):
    """What publishing knows of the other workflows: ids by name, which have a published
    version, and whom each one's latest published version calls (ids)."""

    by_name: Mapping[str, list[str]]
    published: frozenset[str]
    calls: Mapping[str, frozenset[str]]
    own_id: str | None = None  # the workflow being published (None: an import, new)


def resolve(ref: str, catalog: WorkflowCatalog, own_name: str) -> tuple[str | None, str | None]:
    """(workflow id, None) or (None, why not): an id, or a name matching exactly one workflow.
    The workflow being published resolves to its own id (or `"self"` when it is new)."""
    own = catalog.own_id or "self"
    if ref == catalog.own_id or (catalog.own_id is None and ref == own_name):
        return own, None
    if ref in catalog.published or any(ref in ids for ids in catalog.by_name.values()):
        found = ref
    else:
        ids = catalog.by_name.get(ref, [])
        if len(ids) > 1:
            return None, (
                f"{len(ids)} workflows are named {ref!r}; refer to one by its id "
                f"({', '.join(sorted(ids))})"
            )
        if not ids:
            return None, f"no workflow has the id or name {ref!r}; create and publish it first"
        found = ids[0]
    if found == catalog.own_id:
        return own, None
    if found not in catalog.published:
        return None, f"workflow {ref!r} has no published version yet; publish it first"
    return found, None


def workflow_problems(document: WorkflowDocument, catalog: WorkflowCatalog) -> list[Problem]:
    """Unknown, ambiguous or unpublished workflows the document names, and calls that would
    make a workflow call itself, directly or through others."""
    problems: list[Problem] = []
    own = catalog.own_id or "self"
    callees: set[str] = set()
    for field, ref, is_call in workflow_references(document):
        found, why = resolve(ref, catalog, document.name)
        if why is not None:
            problems.append(Problem(field=field, message=why))
        elif found == own and is_call:
            problems.append(
                Problem(field=field, message="a workflow cannot call itself; split it in two")
            )
        elif found is not None and is_call:
            callees.add(found)
    calls = {**catalog.calls, own: frozenset(callees - {own})}
    cycle = call_cycle(own, calls)
    if cycle is not None:
        names = {id_: name for name, ids in catalog.by_name.items() for id_ in ids}
        names[own] = document.name
        shown = " -> ".join(repr(names.get(node, node)) for node in cycle)
        problems.append(
            Problem(
                field="steps",
                message=f"the workflow would call itself through other workflows ({shown}); "
                "remove one of those calls",
            )
        )
    return problems
