"""Templates and expressions: Jinja2's immutable sandbox, compiled once, strict about names.

String values in a step's `cfg` may hold `{{ ... }}` templates over `trigger`, `steps`, `vars`
and `execution`; conditions and subscription filters are single Jinja2 expressions. The
environment is sandboxed (no attribute escapes, no mutation of inputs) and undefined names are
errors, so a typo fails loudly instead of rendering an empty string. Compilation errors are
caught at save time by `template_problems`; rendering comes with the execution engine.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.nodes import Template as TemplateNode
from jinja2.parser import Parser

from server.engine.sandbox import BoundedSandbox
from server.engine.template_checks import VariableReads, static_problem, variable_reads

MAX_TEMPLATE_LENGTH = 20_000
ENVIRONMENT = BoundedSandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
TEMPLATE_MARKERS = ("{{", "{%", "{#")


def is_template(value: str) -> bool:
    return any(marker in value for marker in TEMPLATE_MARKERS)


def string_leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string inside a JSON value with its path (`title`, `headers.Authorization`)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_leaves(item, f"{path}[{index}]")


def template_error(source: str) -> str | None:
    """Why `source` does not compile as a template, or None when it does."""
    if len(source) > MAX_TEMPLATE_LENGTH:
        return f"template longer than {MAX_TEMPLATE_LENGTH} characters"
    try:
        tree = _parse(source)
        problem = static_problem(tree)
        ENVIRONMENT.compile(source)  # unknown filters and tests are found here
    except TemplateSyntaxError as error:
        return f"template does not compile: {error.message} (line {error.lineno})"
    except RecursionError:
        return "template nests too deeply; split it into simpler parts"
    return problem


def expression_error(source: str) -> str | None:
    """Why `source` is not a valid expression (conditions, filters), or None when it is."""
    if not source.strip():
        return "expression is empty; write e.g. trigger.score >= 50"
    if len(source) > MAX_TEMPLATE_LENGTH:
        return f"expression longer than {MAX_TEMPLATE_LENGTH} characters"
    try:
        tree = Parser(ENVIRONMENT, source, state="variable").parse_expression()
        problem = static_problem(tree)
        ENVIRONMENT.compile_expression(source)
    except TemplateSyntaxError as error:
        return f"expression does not compile: {error.message}"
    except RecursionError:
        return "expression nests too deeply; split it into simpler parts"
    return problem


def _parse(source: str) -> TemplateNode:
    return ENVIRONMENT.parse(source)


@functools.lru_cache(maxsize=4096)
def template_variable_reads(source: str, *, expression: bool = False) -> VariableReads:
    """Which variables a template (or an expression) reads; see `variable_reads`."""
    if expression:
        return variable_reads(Parser(ENVIRONMENT, source, state="variable").parse_expression())
    return variable_reads(_parse(source))
