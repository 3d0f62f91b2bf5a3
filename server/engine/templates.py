"""Templates and expressions: Jinja2's immutable sandbox, compiled once, strict about names.

String values in a step's `cfg` may hold `{{ ... }}` templates over `trigger`, `steps`, `vars`
and `execution`; conditions and subscription filters are single Jinja2 expressions. The
environment is sandboxed (no attribute escapes, no mutation of inputs) and undefined names are
errors, so a typo fails loudly instead of rendering an empty string. Compilation errors are
caught at save time by `template_problems`; rendering comes with the execution engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.nodes import Template as TemplateNode
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEMPLATE_LENGTH = 20_000
ENVIRONMENT = ImmutableSandboxedEnvironment(
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
        _parse(source)
    except TemplateSyntaxError as error:
        return f"template does not compile: {error.message} (line {error.lineno})"
    return None


def expression_error(source: str) -> str | None:
    """Why `source` is not a valid expression (conditions, filters), or None when it is."""
    if not source.strip():
        return "expression is empty; write e.g. trigger.score >= 50"
    if len(source) > MAX_TEMPLATE_LENGTH:
        return f"expression longer than {MAX_TEMPLATE_LENGTH} characters"
    try:
        ENVIRONMENT.compile_expression(source)
    except TemplateSyntaxError as error:
        return f"expression does not compile: {error.message}"
    return None


def _parse(source: str) -> TemplateNode:
    return ENVIRONMENT.parse(source)
