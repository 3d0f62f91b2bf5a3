"""Templates and expressions: Jinja2's immutable sandbox, compiled once, strict about names.

String values in a step's `cfg` may hold `{{ ... }}` templates over `trigger`, `steps`, `vars`
and `execution`; conditions and subscription filters are single Jinja2 expressions. The
environment is sandboxed (no attribute escapes, no mutation of inputs) and undefined names are
errors, so a typo fails loudly instead of rendering an empty string. Compilation errors are
caught at save time by `template_problems`; rendering comes with the execution engine.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.nodes import Node
from jinja2.nodes import Template as TemplateNode
from jinja2.parser import Parser

from server.engine.sandbox import BoundedSandbox
from server.engine.template_checks import (
    VariableReads,
    call_reads,
    static_problem,
    step_reads,
    variable_reads,
)

MAX_TEMPLATE_LENGTH = 20_000
# Parts (syntax nodes) of one template or expression: compiling grows with them, and a compile
# is one uninterruptible piece of work; real templates have tens.
MAX_TEMPLATE_NODES = 2_000
MAX_TEMPLATE_DEPTH = 40
ENVIRONMENT = BoundedSandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
TEMPLATE_MARKERS = ("{{", "{%", "{#")
_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expression>(?:(?!\}\}|\{\{).)*)\}\}$", re.DOTALL)
# The function every step's templates may call: `resume_url('approval')`, the signed resume
# link of a `wait_for_event` step (made by the runtime, `server.runs.resume_links`).
RESUME_URL_FUNCTION = "resume_url"


def single_expression(value: str) -> str | None:
    """The expression of a string that is exactly one `{{ expression }}` (surrounding blanks
    aside), which renders to the expression's own value rather than its text; else None."""
    found = _SINGLE_EXPRESSION.match(value.strip())
    return found["expression"] if found else None


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
        problem = _size_problem(tree) or static_problem(tree)
        if problem:
            return problem
        ENVIRONMENT.compile(source)  # unknown filters and tests are found here
    except TemplateSyntaxError as error:
        return f"template does not compile: {error.message} (line {error.lineno})"
    except (RecursionError, SyntaxError):
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
        problem = _size_problem(tree) or static_problem(tree)
        if problem:
            return problem
        ENVIRONMENT.compile_expression(source)
    except TemplateSyntaxError as error:
        return f"expression does not compile: {error.message}"
    except (RecursionError, SyntaxError):
        return "expression nests too deeply; split it into simpler parts"
    return problem


def _size_problem(tree: Node) -> str | None:
    """Too many parts, or nested too deeply (compiling `x + x + ...` grows with the square of
    its depth, and Python refuses code nested over 200 levels)."""
    parts = 0
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        parts += 1
        if parts > MAX_TEMPLATE_NODES:
            return f"template has over {MAX_TEMPLATE_NODES} parts; split it across steps"
        if depth > MAX_TEMPLATE_DEPTH:
            return (
                f"template nests over {MAX_TEMPLATE_DEPTH} levels deep; split it into simpler parts"
            )
        pending.extend((child, depth + 1) for child in node.iter_child_nodes())
    return None


def _parse(source: str) -> TemplateNode:
    return ENVIRONMENT.parse(source)


@functools.lru_cache(maxsize=4096)
def template_variable_reads(source: str, *, expression: bool = False) -> VariableReads:
    """Which variables a template (or an expression) reads; see `variable_reads`."""
    if expression:
        return variable_reads(Parser(ENVIRONMENT, source, state="variable").parse_expression())
    return variable_reads(_parse(source))


@functools.lru_cache(maxsize=4096)
def template_step_reads(source: str, *, expression: bool = False) -> VariableReads:
    """Which earlier steps a template (or an expression) reads; see `step_reads`."""
    if expression:
        return step_reads(Parser(ENVIRONMENT, source, state="variable").parse_expression())
    return step_reads(_parse(source))


@functools.lru_cache(maxsize=4096)
def template_resume_url_reads(source: str, *, expression: bool = False) -> VariableReads:
    """Which steps a template's `resume_url(...)` calls name; see `call_reads`."""
    if expression:
        tree: Node = Parser(ENVIRONMENT, source, state="variable").parse_expression()
    else:
        tree = _parse(source)
    return call_reads(tree, RESUME_URL_FUNCTION)
