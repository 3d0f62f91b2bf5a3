"""What a document's templates refer to, checked before it runs (pure, plain values)."""

from __future__ import annotations

from typing import Any

import msgspec

from server.engine.document import WorkflowDocument
from server.engine.references import address_problems, reference_problems


def _document(steps: list[dict[str, Any]], edges: list[dict[str, str]], **rest: Any) -> Any:
    return msgspec.convert({"name": "w", "steps": steps, "edges": edges, **rest}, WorkflowDocument)


def _action(key: str, **cfg: Any) -> dict[str, Any]:
    return {"key": key, "kind": "action", "action_key": "set_variables", "cfg": cfg}


def test_a_step_may_read_every_ancestor_but_not_a_sibling_branch() -> None:
    document = _document(
        [
            _action("a"),
            {
                "key": "b",
                "kind": "condition",
                "cfg": {
                    "cases": [
                        {"branch": "x", "expression": "steps.a.output.n > 1"},
                        {"branch": "y", "expression": "steps.c.output.n > 1"},
                    ]
                },
            },
            _action("c", values={"v": "{{ steps.a.output.n }}"}),
            _action("d", values={"v": "{{ steps.c.output }}"}),
            {"key": "e", "kind": "delay", "cfg": {"until": "{{ steps.a.output.at }}"}},
        ],
        [
            {"from": "a", "to": "b"},
            {"from": "b", "to": "c", "branch_key": "x"},
            {"from": "b", "to": "d", "branch_key": "y"},
            {"from": "d", "to": "e"},
        ],
    )
    problems = list(reference_problems(document))
    assert [(p.field, p.message) for p in problems] == [
        (
            "steps[b].cfg.cases[1].expression",
            "steps.c cannot have run before step 'b' (it is not on a path of edges leading "
            "here); steps it can read: a",
        ),
        (
            "steps[d].cfg.values.v",
            "steps.c cannot have run before step 'd' (it is not on a path of edges leading "
            "here); steps it can read: a, b",
        ),
    ]


def test_dynamic_or_shadowed_reads_are_not_guessed_at() -> None:
    document = _document(
        [
            _action(
                "a",
                values={
                    "whole": "{{ steps|tojson }}",
                    "by_name": "{{ steps[trigger.key] }}",
                    "shadowed": "{% set vars = {'x': 1} %}{{ vars.x }}",
                    "loop": "{% for steps in [1] %}{{ steps.anything }}{% endfor %}",
                    "item": "{{ vars['owner'] }}",
                    "plain": "steps.nothing and vars.nothing",
                },
            ),
        ],
        [],
        variables=[{"key": "owner", "value": "o"}],
    )
    assert list(reference_problems(document)) == []


def test_unknown_variable_lists_the_known_ones_or_says_there_are_none() -> None:
    with_none = _document([_action("a", values={"v": "{{ vars.x }}"})], [])
    [problem] = reference_problems(with_none)
    assert problem.message == (
        "vars.x is not a variable of this workflow; variables: none (add one under variables)"
    )


def test_literal_private_hosts_are_reported_unless_allowed() -> None:
    def http(key: str, url: str) -> dict[str, Any]:
        return {"key": key, "kind": "action", "action_key": "http_request", "cfg": {"url": url}}

    document = _document(
        [
            http("private", "http://192.168.1.10:8080/x"),
            http("local", "http://localhost/x"),
            http("metadata", "http://169.254.169.254/latest"),
            http("ipv6", "http://[::1]/x"),
            http("public", "https://93.184.216.34/x"),
            http("named", "https://api.example.com/x"),
            http("templated", "http://{{ vars.host }}/x"),
            http("allowed", "http://10.0.0.7/x"),
        ],
        [],
    )
    problems = {p.field: p.message for p in address_problems(document, ["10.0.0.0/8"])}
    assert sorted(problems) == [
        "steps[ipv6].cfg.url",
        "steps[local].cfg.url",
        "steps[metadata].cfg.url",
        "steps[private].cfg.url",
    ]
    assert problems["steps[metadata].cfg.url"] == (
        "169.254.169.254 is a cloud metadata address: the call would be refused; if it is "
        "intended, add 169.254.169.254 to HTTP_ALLOWED_HOSTS"
    )


def test_resume_url_must_name_a_wait_for_event_step_of_the_workflow() -> None:
    wait = {
        "key": "approval",
        "kind": "wait_for_event",
        "cfg": {"trigger_key": "a", "correlation_key": "k"},
    }
    document = _document(
        [
            _action(
                "mail",
                ok="{{ resume_url('approval') }}?decision=approve",
                typo="{{ resume_url('aproval') }}",
                not_a_wait="{{ resume_url('mail') }}",
                dynamic="{{ resume_url(trigger.step) }}",
            ),
            wait,
        ],
        [{"from": "mail", "to": "approval"}],
    )
    problems = {problem.field: problem.message for problem in reference_problems(document)}
    assert set(problems) == {"steps[mail].cfg.typo", "steps[mail].cfg.not_a_wait"}
    assert "'aproval' is not a step of this workflow" in problems["steps[mail].cfg.typo"]
    assert "names a wait_for_event step: approval" in problems["steps[mail].cfg.typo"]
    assert "'mail' is of kind action" in problems["steps[mail].cfg.not_a_wait"]
