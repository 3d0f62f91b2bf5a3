"""Templates under a hard budget: hostile ones stop at a named limit, the loop stays free.

Each template here froze every role of the process before the budget (a render ran on the event
loop until it finished, and filters allocated hundreds of megabytes before any size check).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from server.engine.bounded import evaluate_bounded, render_cfg_bounded
from server.engine.rendering import REDACTED, RenderError, redact, render_cfg, secret_strings
from server.engine.templates import expression_error, template_error

MEGABYTE = "a" * 1_000_000
CONTEXT: dict[str, Any] = {
    "trigger": {"n": 100_000, "big": 300_000_000, "mb": MEGABYTE, "lines": "a\n" * 1000},
    "steps": {},
    "vars": {},
}

# (template, the limit its error must name); inputs come from the payload, so none of these
# can be refused when the workflow is saved.
HOSTILE = [
    (
        "{% for i in range(trigger.n) %}{% for j in range(trigger.n) %}x{% endfor %}{% endfor %}",
        "100000 loop iterations",
    ),
    ("{{ 'x'|center(trigger.big) }}", "1000000 characters or items per value"),
    ("{{ ('%(x)' ~ trigger.big ~ 's') % {'x': 1} }}", "format widths over 9999"),
    ("{{ ('%' ~ trigger.big ~ 's')|format(1) }}", "format widths over 9999"),
    ("{{ ('{:>' ~ trigger.big ~ '}').format(1) }}", "format widths over 9999"),
    ("{{ range(1000)|join(trigger.mb) }}", "characters or items per value"),
    ("{{ trigger.mb|replace('a', trigger.mb) }}", "characters or items per value"),
    ("{{ trigger.lines|indent(trigger.big) }}", "characters or items per value"),
    ("{{ trigger.mb|wordwrap(1, wrapstring=trigger.mb) }}", "characters or items per value"),
    ("{{ 'x'.ljust(trigger.big) }}", "characters or items per value"),
    ("{{ trigger.mb.join(range(1000)|map('string')) }}", "characters or items per value"),
    ("{{ trigger.mb.replace('a', trigger.mb) }}", "characters or items per value"),
    ("{{ ('a\t' * 1000).expandtabs(trigger.big) }}", "characters or items per value"),
    ("{{ [trigger.mb] * 100000 }}", "characters or items per value"),
    (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "characters or items per value",
    ),
    (
        "{% set ns = namespace(n=3) %}{% for i in range(40) %}"
        "{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n }}",
        "4096-bit numbers",
    ),
    (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
        "s of CPU time per render",
    ),
    ("{{ range(100000)|map('string')|map('list')|sum(start=[])|length }}", "per render"),
    ("{{ lipsum(trigger.big) }}", "lipsum"),
]


@pytest.mark.parametrize(("template", "limit"), HOSTILE)
async def test_a_hostile_template_stops_at_a_named_limit_without_holding_the_loop(
    template: str, limit: str
) -> None:
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        with pytest.raises(RenderError, match=limit) as caught:
            await render_cfg_bounded({"body": template}, CONTEXT)
    finally:
        done.set()
        await ticking
    assert str(caught.value).startswith("cfg.body: ")  # the cfg path
    assert time.perf_counter() - started < 8.0
    assert max(lags, default=0.0) < 0.25  # the loop kept turning meanwhile


async def test_a_subscription_filter_is_bounded_the_same_way() -> None:
    with pytest.raises(RenderError, match="characters or items per value"):
        await evaluate_bounded("('x'|center(trigger.big))|length > 1", CONTEXT, "filter")
    assert await evaluate_bounded("trigger.n > 5", CONTEXT) is True


async def test_ordinary_templates_render_as_before() -> None:
    cfg = {
        "title": "Call {{ trigger.name }} ({{ trigger.names|join(', ') }})",
        "count": "{{ trigger.names|length }}",
        "lines": "{% for item in trigger.names %}{{ loop.index }}. {{ item|upper }}\n{% endfor %}",
        "pad": "{{ '%-5s|' % trigger.name }}{{ trigger.name|center(9) }}",
        "joined": "{{ trigger.name ~ '-' ~ trigger.names|first }}",
        "total": "{{ [1, 2, 3]|sum }}",
        "wrapped": "{{ 'a b c d'|wordwrap(3) }}",
    }
    rendered = await render_cfg_bounded(cfg, {"trigger": {"name": "Ann", "names": ["x", "y"]}})
    assert rendered.value == {
        "title": "Call Ann (x, y)",
        "count": 2,
        "lines": "1. X\n2. Y\n",
        "pad": "Ann  |   Ann   ",
        "joined": "Ann-x",
        "total": 6,
        "wrapped": "a b\nc d",
    }


@pytest.mark.parametrize(
    ("template", "limit"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "loop iterations",
        ),
        ("{{ 'x'|center(10**9) }}", "per value"),
        ('{{ "%(x)300000000s" % {"x": 1} }}', "format widths"),
        ("{{ 'a'.ljust(10**9) }}", "per value"),
        ("{{ 'a' * 10**9 }}", "per value"),
        ("{{ trigger.mb.translate(x) }}", "translate"),
        ("{{ range(10**7) }}", "range"),
        ("{{ 2 ** 100000 }}", "4096 bits"),
        ("{{ x|tojson(indent=100000) }}", "indents"),
    ],
)
def test_what_certainly_exceeds_a_limit_is_refused_when_saved(template: str, limit: str) -> None:
    problem = template_error(template)
    assert problem is not None
    assert "refused when it runs" in problem
    assert limit in problem


def test_expressions_are_checked_statically_too() -> None:
    assert "per value" in (expression_error("'x'|center(10**9) == 'x'") or "")
    assert expression_error("trigger.score >= 50") is None


SECRET = "s3cr3t-Value-42"


@pytest.mark.parametrize(
    "template",
    [
        "{{ vars.sv|upper }}",
        "{{ vars.sv|reverse }}",
        "{{ vars.sv|urlencode }}",
        "{{ vars.sv|list|join(' ') }}",
        "x-{{ vars.sv[2:] }}-y",
        "{{ vars['sv'] }}",
        "{{ vars|tojson }}",
    ],
)
def test_a_value_rendered_from_a_secret_is_shown_redacted(template: str) -> None:
    rendered = render_cfg({"v": template}, {"vars": {"sv": SECRET}}, frozenset({"sv"}))
    assert rendered.shown == {"v": REDACTED}
    assert rendered.value["v"] != REDACTED
    tainted = secret_strings(rendered.tainted)
    # the transformed form is redacted wherever the action put it (its output, its error)
    assert redact({"echo": f"got {rendered.value['v']}!"}, tainted) == {"echo": f"got {REDACTED}!"}


def test_templates_that_read_no_secret_are_shown_as_rendered() -> None:
    rendered = render_cfg(
        {"v": "{{ vars.plain }}", "w": "{{ vars.sv is defined }}"},
        {"vars": {"plain": "hello", "sv": SECRET}},
        frozenset({"other"}),
    )
    assert rendered.shown == {"v": "hello", "w": True}


def test_literal_redaction_matches_any_case_url_encoding_and_numbers() -> None:
    secrets = secret_strings([SECRET, 123456789])
    assert redact(f"error: {SECRET.lower()} refused", secrets) == "error: [redacted] refused"
    assert redact({"n": 123456789, "s": "s3cr3t-Value-42%21"}, secrets | {"ab"}) == {
        "n": REDACTED,
        "s": f"{REDACTED}%21",
    }


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ " + " + ".join(["x"] * 300) + " }}", "over 40 levels deep"),
        ("{{ x }}" * 2100, "over 2000 parts"),
        ("{{ " + "(" * 300 + "1" + ")" * 300 + " }}", "nests"),
    ],
)
def test_templates_too_large_to_compile_cheaply_are_refused_quickly(
    template: str, message: str
) -> None:
    started = time.perf_counter()
    assert message in (template_error(template) or "")
    assert time.perf_counter() - started < 2.0
