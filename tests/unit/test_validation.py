from __future__ import annotations

from typing import Any

import msgspec
import pytest

from server.actions.catalog import ACTIONS
from server.engine.document import WorkflowDocument
from server.engine.validation import validate_document

SCHEMAS = {action.action_key: action.cfg_schema for action in ACTIONS}


def document(**parts: Any) -> WorkflowDocument:
    return msgspec.convert({"name": "w", **parts}, WorkflowDocument)


def step(key: str, kind: str = "action", **fields: Any) -> dict[str, Any]:
    if kind == "action":
        fields.setdefault("action_key", "set_variables")
        fields.setdefault("cfg", {"values": {"a": 1}})
    return {"key": key, "kind": kind, **fields}


def edge(source: str, target: str, branch: str = "default") -> dict[str, str]:
    return {"from": source, "to": target, "branch_key": branch}


def messages(doc: WorkflowDocument) -> list[str]:
    return [f"{p.field}: {p.message}" for p in validate_document(doc, SCHEMAS)]


def test_the_design_example_is_valid() -> None:
    doc = document(
        steps=[
            step("hot", "condition", cfg={"expression": "trigger.score >= 50"}),
            step(
                "task",
                action_key="task_management",
                cfg={"operation": "create", "title": "Call {{ trigger.name }}"},
            ),
            step("later", "delay", cfg={"seconds": 3600}),
        ],
        edges=[edge("hot", "task", "true"), edge("hot", "later", "false")],
        subscriptions=[{"trigger_key": "lead-intake", "filter_conditions": {}}],
    )
    assert messages(doc) == []


def test_every_problem_is_reported_at_once_with_its_location() -> None:
    doc = document(
        steps=[
            step("a"),
            step("b", "delay", cfg={"seconds": 0}),
            step("c", action_key="nope"),
            step("d", "condition", cfg={"expression": "x ==="}),
        ],
        edges=[edge("a", "b", "true"), edge("a", "ghost"), edge("d", "d")],
    )
    found = messages(doc)
    assert any(m.startswith("steps[b].cfg.seconds") for m in found)
    assert any("unknown action 'nope'" in m for m in found)
    assert any(m.startswith("steps[d].cfg.expression") and "does not compile" in m for m in found)
    assert any("'true' is not a branch of action step 'a'" in m for m in found)
    assert any("unknown step 'ghost'" in m for m in found)
    assert any("from a step to itself" in m for m in found)
    assert any("exactly one entry step" in m for m in found)


def test_cycles_are_named() -> None:
    doc = document(
        steps=[step("a"), step("b"), step("c")],
        edges=[edge("a", "b"), edge("b", "c"), edge("c", "b")],
    )
    assert any("cycle through steps b, c" in m for m in messages(doc))


def test_switch_conditions_take_their_case_names_as_branches() -> None:
    cases = [
        {"branch": "hot", "expression": "trigger.score > 80"},
        {"branch": "warm", "expression": "trigger.score > 50"},
    ]
    doc = document(
        steps=[
            step("route", "condition", cfg={"cases": cases}),
            step("h"),
            step("w"),
            step("cold"),
        ],
        edges=[
            edge("route", "h", "hot"),
            edge("route", "w", "warm"),
            edge("route", "cold", "default"),
        ],
    )
    assert messages(doc) == []
    bad = document(
        steps=[step("route", "condition", cfg={"cases": cases}), step("x")],
        edges=[edge("route", "x", "true")],
    )
    assert any("use one of default, error, hot, warm" in m for m in messages(bad))


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({}, "a condition takes"),
        ({"expression": ""}, "expression is empty"),
        ({"cases": [{"branch": "true", "expression": "1"}]}, "'true' is reserved"),
        ({"cases": [{"branch": "x"}]}, "each case is"),
    ],
)
def test_condition_settings_are_checked(cfg: dict[str, Any], expected: str) -> None:
    assert any(expected in m for m in messages(document(steps=[step("c", "condition", cfg=cfg)])))


def test_duplicate_keys_and_bad_filters_are_reported() -> None:
    doc = document(
        steps=[step("a"), step("a")],
        variables=[{"key": "v"}, {"key": "v"}],
        subscriptions=[{"trigger_key": "t", "filter_conditions": {"expression": "trigger.x >"}}],
    )
    found = messages(doc)
    assert "steps[a]: key 'a' is used 2 times; keys must be unique" in found
    assert "variables[v]: key 'v' is used 2 times; keys must be unique" in found
    assert any(m.startswith("subscriptions[0].filter_conditions") for m in found)


def test_document_structure_errors_name_the_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.steps\[0\]\.key"):
        document(steps=[{"key": "bad key!", "kind": "action"}])
    with pytest.raises(msgspec.ValidationError, match=r"\$\.steps\[0\]\.kind"):
        document(steps=[{"key": "a", "kind": "loop"}])


@pytest.mark.parametrize(
    "key",
    ["{{ steps.a.output.id }}", "{{ vars.region }}", "{{ vars[trigger.name] }}"],
)
def test_a_concurrency_key_may_read_the_trigger_only(key: str) -> None:
    doc = document(steps=[step("a")], concurrency={"limit": 1, "key": key})
    [problem] = messages(doc)
    assert problem.startswith("concurrency.key: ")
    assert "it may read trigger only" in problem


def test_a_concurrency_key_over_the_trigger_is_valid() -> None:
    doc = document(
        steps=[step("a")],
        concurrency={"limit": 3, "key": "{{ trigger.customer }}-{{ trigger.region }}"},
    )
    assert messages(doc) == []
