"""Templates and expressions: Jinja2's immutable sandbox, compiled once, strict about names.

String values in a step's `cfg` may hold `{{ ... }}` templates over `trigger`, `steps`, `vars`
and `execution`; conditions and subscription filters are single Jinja2 expressions. The
environment is sandboxed (no attribute escapes, no mutation of inputs) and undefined names are
errors, so a typo fails loudly instead of rendering an empty string. Compilation errors are
caught at save time by `template_problems`; rendering comes with the execution engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.nodes import Template as TemplateNode
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEMPLATE_LENGTH = 20_000
MAX_PRODUCED_LENGTH = 1_000_000  # characters or items one operator may produce
MAX_POWER_BITS = 4096
_WIDE_FORMAT = re.compile(r"%[-#0 +]*(\*|\d{5,})")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus bounds on the operators that allocate without limit.

    `"a" * 10**9`, `2 ** 10**9` or `"%999999999s" % x` would freeze the event loop (shared by
    the API, the worker and the scheduler) before any size check on the result could run, so
    they are refused before they are computed.
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
            raise SecurityError("format widths over 9999 are not allowed in templates")
        return super().call_binop(context, operator, left, right)


def _check_repeat(sequence: Any, times: Any) -> None:
    repeats = isinstance(sequence, str | list | tuple) and isinstance(times, int)
    if repeats and len(sequence) * times > MAX_PRODUCED_LENGTH:
        raise SecurityError(f"a template may not build values over {MAX_PRODUCED_LENGTH} long")


def _check_power(base: Any, exponent: Any) -> None:
    integers = isinstance(base, int) and isinstance(exponent, int)
    if integers and abs(base) > 1 and exponent * abs(base).bit_length() > MAX_POWER_BITS:
        raise SecurityError(f"a template may not compute numbers over {MAX_POWER_BITS} bits")


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
