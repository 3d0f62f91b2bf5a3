"""Workflow graph validation: every problem of a document at once, each with where and how.

A publishable workflow has exactly one entry step, edges between known steps only, branch keys
that the source step's kind can take, no cycles, known actions whose `cfg` satisfies the
action's JSON schema, well-formed condition and delay settings, templates and expressions that
compile, templates that read only known variables and earlier steps (`server.engine.references`),
and bounded sizes. `validate_document` returns a list of `Problem`s (empty: valid);
it never raises for bad input. Pure: the action schemas are passed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import msgspec
from jsonschema import Draft202012Validator

from server.engine.document import FLOW_KINDS, Edge, Step, StepKind, WorkflowDocument
from server.engine.flow_steps import (
    WorkflowCatalog,
    flow_branches,
    flow_problems,
    workflow_problems,
)
from server.engine.problems import Problem
from server.engine.references import address_problems, reference_problems, subscription_problems
from server.engine.templates import (
    expression_error,
    string_leaves,
    template_error,
    template_step_reads,
)

__all__ = [
    "Problem",
    "allowed_branches",
    "filter_problem",
    "steps_in_cycles",
    "validate_document",
    "validate_step",
]

MAX_CFG_BYTES = 64 * 1024
MAX_DELAY_SECONDS = 366 * 24 * 3600
ACTION_BRANCHES = frozenset({"default", "error"})
DELAY_BRANCHES = frozenset({"default"})
CONDITION_BRANCHES = frozenset({"true", "false", "default", "error"})


def validate_document(
    document: WorkflowDocument,
    action_schemas: Mapping[str, dict[str, Any]],
    *,
    trigger_keys: Collection[str] | None = None,
    http_allowed_hosts: Sequence[str] = (),
    workflows: WorkflowCatalog | None = None,
) -> list[Problem]:
    """All problems of `document`; `action_schemas` maps known action keys to cfg schemas,
    `trigger_keys` are the registered trigger keys (None: subscriptions are not checked),
    `http_allowed_hosts` the HTTP_ALLOWED_HOSTS setting and `workflows` the other workflows
    (None: workflow references are not checked)."""
    problems = list(_duplicate_keys(document))
    for step in document.steps:
        problems.extend(validate_step(step, action_schemas))
    problems.extend(_edge_problems(document))
    problems.extend(reference_problems(document))
    problems.extend(address_problems(document, http_allowed_hosts))
    problems.extend(_subscription_problems(document))
    if trigger_keys is not None:
        problems.extend(subscription_problems(document, trigger_keys))
    problems.extend(_option_problems(document))
    if workflows is not None:
        problems.extend(workflow_problems(document, workflows))
    return problems


def _option_problems(document: WorkflowDocument) -> Iterator[Problem]:
    """The concurrency key is a template over `trigger` (an execution's group is decided when
    it starts, before any step has run)."""
    key = document.concurrency.key if document.concurrency else None
    if key is None:
        return
    if error := template_error(key):
        yield Problem(field="concurrency.key", message=error)
    elif template_step_reads(key, expression=False).keys:
        yield Problem(
            field="concurrency.key",
            message="the concurrency key is decided when an execution starts, before any step "
            "has run: it may read trigger (and vars), not steps",
        )


def validate_step(step: Step, action_schemas: Mapping[str, dict[str, Any]]) -> list[Problem]:
    """Problems of one step on its own (used when a draft step is saved)."""
    where = f"steps[{step.key}]"
    if len(msgspec.json.encode(step.cfg)) > MAX_CFG_BYTES:
        return [Problem(field=f"{where}.cfg", message=f"cfg larger than {MAX_CFG_BYTES} bytes")]
    if step.kind is StepKind.ACTION:
        problems = _action_problems(step, action_schemas, where)
    elif step.kind in FLOW_KINDS:
        problems = _no_action_key(step, where) + flow_problems(step, where)
    else:
        problems = _no_action_key(step, where)
        check = _condition_problems if step.kind is StepKind.CONDITION else _delay_problems
        problems.extend(check(step.cfg, where))
    for path, text in string_leaves(step.cfg):
        if step.kind is StepKind.CONDITION:
            continue  # expressions, checked by _condition_problems
        if error := template_error(text):
            problems.append(Problem(field=f"{where}.cfg.{path}", message=error))
    return problems


def _no_action_key(step: Step, where: str) -> list[Problem]:
    if step.action_key is None:
        return []
    return [
        Problem(
            field=f"{where}.action_key",
            message=f"only action steps take an action_key; remove it from this {step.kind} step",
        )
    ]


def allowed_branches(step: Step) -> frozenset[str]:
    """Branch keys an edge leaving `step` may carry."""
    if step.kind is StepKind.ACTION:
        return ACTION_BRANCHES
    if step.kind in FLOW_KINDS:
        return flow_branches(step)
    if step.kind is StepKind.DELAY:
        return DELAY_BRANCHES
    cases = step.cfg.get("cases")
    if isinstance(cases, list):
        names = {case.get("branch") for case in cases if isinstance(case, dict)}
        return frozenset(n for n in names if isinstance(n, str)) | {"default", "error"}
    return CONDITION_BRANCHES


def _duplicate_keys(document: WorkflowDocument) -> Iterator[Problem]:
    for label, keys in (
        ("steps", [step.key for step in document.steps]),
        ("variables", [variable.key for variable in document.variables]),
    ):
        for key, count in Counter(keys).items():
            if count > 1:
                yield Problem(
                    field=f"{label}[{key}]",
                    message=f"key {key!r} is used {count} times; keys must be unique",
                )
    if not document.steps:
        yield Problem(field="steps", message="a workflow needs at least one step")


def _action_problems(
    step: Step, action_schemas: Mapping[str, dict[str, Any]], where: str
) -> list[Problem]:
    if step.action_key is None:
        return [
            Problem(
                field=f"{where}.action_key",
                message="an action step needs an action_key; see GET /api/v1/registry/actions",
            )
        ]
    schema = action_schemas.get(step.action_key)
    if schema is None:
        known = ", ".join(sorted(action_schemas)) or "none"
        return [
            Problem(
                field=f"{where}.action_key",
                message=f"unknown action {step.action_key!r}; known actions: {known}",
            )
        ]
    validator = Draft202012Validator(schema)
    return [
        Problem(
            field=f"{where}.cfg" + "".join(f".{part}" for part in error.absolute_path),
            message=f"{error.message} (see the {step.action_key} schema in GET /api/v1/registry/actions)",
        )
        for error in sorted(
            validator.iter_errors(step.cfg), key=lambda e: list(map(str, e.absolute_path))
        )
    ]


def _condition_problems(cfg: dict[str, Any], where: str) -> list[Problem]:
    expected = 'a condition takes {"expression": "..."} or {"cases": [{"branch": "name", "expression": "..."}]}'
    if set(cfg) == {"expression"}:
        expression = cfg["expression"]
        if not isinstance(expression, str):
            return [Problem(field=f"{where}.cfg.expression", message="expression must be a string")]
        error = expression_error(expression)
        return [Problem(field=f"{where}.cfg.expression", message=error)] if error else []
    if set(cfg) != {"cases"} or not isinstance(cfg["cases"], list) or not cfg["cases"]:
        return [Problem(field=f"{where}.cfg", message=expected)]
    problems = []
    names: list[str] = []
    for index, case in enumerate(cfg["cases"]):
        at = f"{where}.cfg.cases[{index}]"
        if not (
            isinstance(case, dict)
            and set(case) == {"branch", "expression"}
            and isinstance(case["branch"], str)
            and isinstance(case["expression"], str)
        ):
            problems.append(
                Problem(field=at, message='each case is {"branch": "name", "expression": "..."}')
            )
            continue
        if case["branch"] in CONDITION_BRANCHES:
            problems.append(
                Problem(
                    field=f"{at}.branch",
                    message=f"{case['branch']!r} is reserved; name the case otherwise",
                )
            )
        names.append(case["branch"])
        if error := expression_error(case["expression"]):
            problems.append(Problem(field=f"{at}.expression", message=error))
    problems.extend(
        Problem(field=f"{where}.cfg.cases", message=f"case {name!r} appears {count} times")
        for name, count in Counter(names).items()
        if count > 1
    )
    return problems


def _delay_problems(cfg: dict[str, Any], where: str) -> list[Problem]:
    if set(cfg) == {"seconds"}:
        seconds = cfg["seconds"]
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds <= MAX_DELAY_SECONDS
        ):
            return [
                Problem(
                    field=f"{where}.cfg.seconds",
                    message=f"seconds must be a number above 0 and at most {MAX_DELAY_SECONDS} (366 days)",
                )
            ]
        return []
    if set(cfg) == {"until"} and isinstance(cfg["until"], str) and cfg["until"].strip():
        return []
    return [
        Problem(
            field=f"{where}.cfg",
            message='a delay takes {"seconds": 3600} or {"until": "<ISO 8601 timestamp or template>"}',
        )
    ]


def _edge_problems(document: WorkflowDocument) -> list[Problem]:
    steps = {step.key: step for step in document.steps}
    problems: list[Problem] = []
    valid: list[Edge] = []
    for index, edge in enumerate(document.edges):
        where = f"edges[{index}] ({edge.source} -> {edge.target})"
        missing = [key for key in (edge.source, edge.target) if key not in steps]
        if missing:
            problems.extend(
                Problem(field=where, message=f"unknown step {key!r}; add the step or fix the edge")
                for key in missing
            )
            continue
        if edge.source == edge.target:
            problems.append(
                Problem(field=where, message="an edge cannot lead from a step to itself")
            )
            continue
        allowed = allowed_branches(steps[edge.source])
        if edge.branch_key == "timeout" and steps[edge.source].kind is StepKind.WAIT_FOR_EVENT:
            if edge.branch_key not in allowed:
                problems.append(
                    Problem(
                        field=f"{where}.branch_key",
                        message=f"step {edge.source!r} has no timeout, so it never takes a "
                        "'timeout' edge; set cfg.timeout_seconds or remove the edge",
                    )
                )
        elif edge.branch_key not in allowed:
            problems.append(
                Problem(
                    field=f"{where}.branch_key",
                    message=f"{edge.branch_key!r} is not a branch of {steps[edge.source].kind} step {edge.source!r}; use one of {', '.join(sorted(allowed))}",
                )
            )
        valid.append(edge)
    for (source, target, branch), count in Counter(
        (e.source, e.target, e.branch_key) for e in valid
    ).items():
        if count > 1:
            problems.append(
                Problem(
                    field=f"edges ({source} -> {target})",
                    message=f"edge with branch {branch!r} appears {count} times",
                )
            )
    if steps:
        problems.extend(_shape_problems(steps, valid))
    return problems


def _shape_problems(steps: Mapping[str, Step], edges: list[Edge]) -> list[Problem]:
    incoming = Counter(edge.target for edge in edges)
    entries = [key for key in steps if incoming[key] == 0]
    problems = []
    if len(entries) != 1:
        listed = ", ".join(entries) if entries else "none (every step has an incoming edge)"
        problems.append(
            Problem(
                field="steps",
                message=f"a workflow needs exactly one entry step (a step without incoming edges); found: {listed}",
            )
        )
    cyclic = steps_in_cycles(steps, edges)
    if cyclic:
        problems.append(
            Problem(
                field="edges",
                message=f"the edges form a cycle through steps {', '.join(cyclic)}; remove an edge to break it",
            )
        )
    return problems


def steps_in_cycles(steps: Iterable[str], edges: list[Edge]) -> list[str]:
    """Steps on a cycle, or behind one: what Kahn's algorithm cannot order."""
    steps = list(steps)
    successors: dict[str, list[str]] = {key: [] for key in steps}
    indegree = Counter[str]()
    for edge in edges:
        successors[edge.source].append(edge.target)
        indegree[edge.target] += 1
    ready = [key for key in steps if indegree[key] == 0]
    while ready:
        key = ready.pop()
        for target in successors[key]:
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    return sorted(key for key in steps if indegree[key] > 0)


def _subscription_problems(document: WorkflowDocument) -> Iterator[Problem]:
    for index, subscription in enumerate(document.subscriptions):
        problem = filter_problem(subscription.filter_conditions)
        if problem:
            yield Problem(field=f"subscriptions[{index}].filter_conditions", message=problem)


def filter_problem(filter_conditions: dict[str, Any]) -> str | None:
    """Why a subscription filter is invalid: `{}` matches all, `{"expression": ...}` filters."""
    if not filter_conditions:
        return None
    expression = filter_conditions.get("expression")
    if set(filter_conditions) != {"expression"} or not isinstance(expression, str):
        return (
            'filter_conditions is {} (match every event) or {"expression": "trigger.score >= 50"}'
        )
    return expression_error(expression)
