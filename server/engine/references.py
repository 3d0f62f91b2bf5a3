"""What a workflow's templates refer to, checked against the document before it runs.

A template that reads `steps.notfy.output` (a step that does not exist), a step that cannot
have run before the one rendering it (not an ancestor in the graph), `vars.owner` (no such
variable), or calls `resume_url('aproval')` (no such `wait_for_event` step) fails every time
it runs: these are validation problems, each naming the step, the
cfg path and the names that would work. So are a subscription to a trigger key nothing
registers, and an `http_request` URL whose host is a literal private address that
`HTTP_ALLOWED_HOSTS` does not allow (the call would be refused). Pure: the registered trigger
keys and the allowed hosts are passed in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from server.engine.addresses import IPAddress, is_allowed, refusal_reason
from server.engine.document import Edge, Step, StepKind, WorkflowDocument
from server.engine.problems import Problem
from server.engine.templates import (
    RESUME_URL_FUNCTION,
    expression_error,
    is_template,
    string_leaves,
    template_error,
    template_resume_url_reads,
    template_step_reads,
    template_variable_reads,
)

REGISTER_TRIGGER = (
    'POST /api/v1/registry/triggers {"trigger_key": "%s", "type": "event"} (or create a '
    "webhook or schedule with that trigger_key)"
)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def ancestors(steps: Collection[str], edges: Sequence[Edge]) -> dict[str, frozenset[str]]:
    """Each step's ancestors: the steps with a path of edges to it (edges to unknown steps
    are ignored; a cycle makes a step its own ancestor, reported elsewhere)."""
    predecessors: dict[str, set[str]] = {key: set() for key in steps}
    for edge in edges:
        if edge.source in predecessors and edge.target in predecessors:
            predecessors[edge.target].add(edge.source)
    found: dict[str, frozenset[str]] = {}
    for key in steps:
        seen: set[str] = set()
        pending = list(predecessors[key])
        while pending:
            step = pending.pop()
            if step not in seen:
                seen.add(step)
                pending.extend(predecessors[step])
        found[key] = frozenset(seen)
    return found


def reference_problems(document: WorkflowDocument) -> Iterator[Problem]:
    """Templates and expressions that read unknown steps or variables, or steps that cannot
    have run before theirs."""
    keys = [step.key for step in document.steps]
    before = ancestors(keys, document.edges)
    variables = frozenset(variable.key for variable in document.variables)
    kinds = {step.key: step.kind for step in document.steps}
    for step in document.steps:
        for path, source, expression in _sources(step):
            yield from _step_problems(step, path, source, expression, before, keys)
            yield from _resume_url_problems(step, path, source, expression, kinds)
            reads = template_variable_reads(source, expression=expression)
            for key in sorted(set() if reads.assigned else reads.keys - variables):
                known = ", ".join(sorted(variables)) or "none (add one under variables)"
                yield Problem(
                    field=f"steps[{step.key}].cfg.{path}",
                    message=f"vars.{key} is not a variable of this workflow; variables: {known}",
                )


def _step_problems(
    step: Step,
    path: str,
    source: str,
    expression: bool,
    before: Mapping[str, frozenset[str]],
    keys: list[str],
) -> Iterator[Problem]:
    earlier = before.get(step.key, frozenset())
    reads = template_step_reads(source, expression=expression)
    for key in sorted(set() if reads.assigned else reads.keys):
        field = f"steps[{step.key}].cfg.{path}"
        if key not in before:
            yield Problem(
                field=field,
                message=f"steps.{key} is not a step of this workflow; steps: {', '.join(keys)}",
            )
        elif key not in earlier:
            can = ", ".join(k for k in keys if k in earlier) or "none (it is the entry step)"
            yield Problem(
                field=field,
                message=f"steps.{key} cannot have run before step {step.key!r} (it is not "
                f"on a path of edges leading here); steps it can read: {can}",
            )


def _resume_url_problems(
    step: Step, path: str, source: str, expression: bool, kinds: Mapping[str, StepKind]
) -> Iterator[Problem]:
    """`resume_url('key')` calls naming no `wait_for_event` step of the workflow."""
    reads = template_resume_url_reads(source, expression=expression)
    waits = [key for key, kind in kinds.items() if kind is StepKind.WAIT_FOR_EVENT]
    for key in sorted(reads.keys):
        if kinds.get(key) is StepKind.WAIT_FOR_EVENT:
            continue
        what = "is not a step of this workflow" if key not in kinds else f"is of kind {kinds[key]}"
        yield Problem(
            field=f"steps[{step.key}].cfg.{path}",
            message=f"{RESUME_URL_FUNCTION}({key!r}): {key!r} {what}; {RESUME_URL_FUNCTION} "
            f"names a wait_for_event step: {', '.join(waits) or 'none (add one)'}",
        )


def _sources(step: Step) -> Iterator[tuple[str, str, bool]]:
    """(cfg path, source, is an expression) of each template or expression that compiles."""
    if step.kind is StepKind.CONDITION:
        expression = step.cfg.get("expression")
        if isinstance(expression, str) and expression_error(expression) is None:
            yield "expression", expression, True
        cases = step.cfg.get("cases")
        for index, case in enumerate(cases if isinstance(cases, list) else []):
            text = case.get("expression") if isinstance(case, dict) else None
            if isinstance(text, str) and expression_error(text) is None:
                yield f"cases[{index}].expression", text, True
        return
    for path, text in string_leaves(step.cfg):
        if is_template(text) and template_error(text) is None:
            yield path, text, False


def subscription_problems(
    document: WorkflowDocument, trigger_keys: Collection[str]
) -> Iterator[Problem]:
    """Subscriptions to trigger keys that nothing registers: the workflow would never run."""
    for index, subscription in enumerate(document.subscriptions):
        if subscription.trigger_key not in trigger_keys:
            yield Problem(
                field=f"subscriptions[{index}].trigger_key",
                message=f"no trigger source has key {subscription.trigger_key!r}, so this "
                "subscription would never start the workflow; register it first with "
                + REGISTER_TRIGGER
                % subscription.trigger_key,
            )


def address_problems(document: WorkflowDocument, allowed_hosts: Sequence[str]) -> Iterator[Problem]:
    """`http_request` URLs whose host is a literal non-public address (or localhost) that
    `HTTP_ALLOWED_HOSTS` does not allow: the call would be refused every time."""
    for step in document.steps:
        url = step.cfg.get("url")
        if step.action_key != "http_request" or not isinstance(url, str):
            continue
        host, addresses = _literal_host(url)
        for address in addresses:
            reason = refusal_reason(address)
            if reason is not None and not is_allowed(host, address, allowed_hosts):
                yield Problem(
                    field=f"steps[{step.key}].cfg.url",
                    message=f"{host} is {reason}: the call would be refused; if it is "
                    f"intended, add {host} to HTTP_ALLOWED_HOSTS",
                )
                break


def _literal_host(url: str) -> tuple[str, list[IPAddress]]:
    """The URL's host and the addresses it certainly is (none when it is a name or a template)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return "", []
    if not host or is_template(parts.netloc):
        return host, []
    if host in LOOPBACK_NAMES:
        return host, [ipaddress.ip_address("127.0.0.1")]
    try:
        return host, [ipaddress.ip_address(host)]
    except ValueError:
        return host, []
