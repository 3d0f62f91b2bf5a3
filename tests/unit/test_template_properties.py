"""Property: any template built from the language's parts renders to JSON data or fails with a
RenderError, in bounded time; nothing else escapes, and nothing reaches outside the sandbox."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.budget import Budget
from server.engine.rendering import RenderError, render_cfg, with_budget
from tests.support.timing import collector_frozen

CONTEXT: dict[str, Any] = {
    "trigger": {"n": 7, "big": 10**9, "s": "héllo wörld", "mb": "a" * 100_000, "items": [1, 2, 3]},
    "steps": {"a": {"output": {"id": 5, "list": list(range(50))}}},
    "vars": {"plain": "value"},
    "execution": {"id": "e1"},
}
ATOMS = [
    "trigger.n", "trigger.big", "trigger.s", "trigger.mb", "trigger['items']", "1", "0", "-3",
    "10**6", "'x'", "'%s'", "'{:>5}'", "[1, 2]", "{'k': 1}", "none", "true", "range(trigger.n)",
    "steps.a.output.list", "vars.plain", "execution.id", "trigger.missing", "loop", "self",
    "''.__class__", "namespace(a=1)", "lipsum",
]  # fmt: skip
FILTERS = [
    "upper", "length", "center(trigger.big)", "join(trigger.mb)", "replace('a', trigger.mb)",
    "indent(trigger.big)", "wordwrap(1)", "format(1)", "list", "sum", "batch(trigger.big)",
    "tojson", "reverse", "first", "int", "string", "map('string')", "sort", "unique",
    "truncate(3)", "urlencode", "default(1)", "attr('__class__')", "select", "slice(3)",
]  # fmt: skip
OPERATORS = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "<", "and", "or", "in"]
METHODS = ["ljust(trigger.big)", "upper()", "split()", "join(trigger['items'])", "format(1)",
           "replace('l', trigger.mb)", "zfill(trigger.big)", "mro()", "items()"]  # fmt: skip


def _expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        st.sampled_from(ATOMS),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(OPERATORS), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(inner, st.sampled_from(FILTERS)).map(lambda t: f"({t[0]})|{t[1]}"),
            st.tuples(inner, st.sampled_from(METHODS)).map(lambda t: f"({t[0]}).{t[1]}"),
            inner.map(lambda e: f"({e})[0]"),
        ),
        max_leaves=6,
    )


def _templates() -> st.SearchStrategy[str]:
    expression = _expressions()
    return st.one_of(
        expression.map(lambda e: "{{ " + e + " }}"),
        st.tuples(expression, expression).map(lambda t: f"x{{{{ {t[0]} }}}}y{{{{ {t[1]} }}}}"),
        st.tuples(expression, expression).map(
            lambda t: (
                f"{{% for i in range(trigger.n) %}}{{% for j in {t[0]} %}}{{{{ {t[1]} }}}}"
                "{% endfor %}{% endfor %}"
            )
        ),
        expression.map(
            lambda e: (
                "{% set ns = namespace(v=" + e + ") %}{% for i in range(40) %}"
                "{% set ns.v = ns.v ~ ns.v %}{% endfor %}{{ ns.v|length }}"
            )
        ),
    )


@pytest.fixture(scope="module", autouse=True)
def _heap_out_of_the_collector() -> Iterator[None]:
    """The wall-time bound below measures the render, not pytest's heap (tests.support.timing)."""
    with collector_frozen():
        yield


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_templates())
def test_any_template_renders_to_data_or_fails_with_a_render_error(template: str) -> None:
    started = time.perf_counter()
    try:
        rendered = with_budget(Budget(), render_cfg, {"v": template}, CONTEXT)
    except RenderError:
        pass
    else:
        assert "__class__" not in str(rendered.value)
        assert "<class" not in str(rendered.value)
    assert time.perf_counter() - started < 5.0
