"""Rendering a step's cfg, evaluating conditions, and redacting secrets. Pure.

String values of a cfg are Jinja2 templates over `trigger`, `steps.<key>.output`, `vars.<key>`
and `execution` (the sandboxed, strict environment of `server.engine.templates`). A string
that is exactly one `{{ expression }}` keeps the expression's type (`"{{ trigger.items }}"`
renders a list, not its text); any other template renders to a string. Rendered output is
bounded. A failure names the cfg path and Jinja2's reason (`cfg.title: 'dict object' has no
attribute 'nam'`). Redaction replaces every occurrence of a secret value in a JSON value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from jinja2 import Template, TemplateError, Undefined
from jinja2.environment import TemplateExpression

from server.engine.templates import ENVIRONMENT, is_template

MAX_RENDERED_BYTES = 256 * 1024
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary text; they are not secrets
_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expression>(?:(?!\}\}|\{\{).)*)\}\}$", re.DOTALL)


class RenderError(ValueError):
    """A template or expression failed; the message names where and why."""


def render_cfg(cfg: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """`cfg` with every template rendered against `context`."""
    rendered = {key: _render(value, context, f"cfg.{key}") for key, value in cfg.items()}
    size = len(msgspec.json.encode(rendered))
    if size > MAX_RENDERED_BYTES:
        raise RenderError(
            f"rendered cfg is {size} bytes, over the {MAX_RENDERED_BYTES}-byte limit; "
            "pass references to large data instead of the data itself"
        )
    return rendered


def evaluate(expression: str, context: Mapping[str, Any], where: str = "expression") -> Any:
    """The value of one expression (conditions, switch cases, subscription filters)."""
    try:
        value = _compiled_expression(expression)(**context)
        if isinstance(value, Undefined):
            str(value)  # StrictUndefined raises here, naming the missing name
    except (TemplateError, ArithmeticError, TypeError, ValueError) as error:
        raise RenderError(f"{where}: {_reason(error)} in `{expression.strip()}`") from None
    return value


# Compiling is most of the cost of a render and depends only on the source; published versions
# never change, so the same few sources recur on every execution. Errors are not cached.
COMPILED_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def _compiled_expression(expression: str) -> TemplateExpression:
    return ENVIRONMENT.compile_expression(expression, undefined_to_none=False)


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def _compiled_template(source: str) -> Template:
    return ENVIRONMENT.from_string(source)


def _render(value: Any, context: Mapping[str, Any], path: str) -> Any:
    if isinstance(value, str):
        return _render_string(value, context, path) if is_template(value) else value
    if isinstance(value, dict):
        return {key: _render(item, context, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, context, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def _render_string(source: str, context: Mapping[str, Any], path: str) -> Any:
    single = _SINGLE_EXPRESSION.match(source.strip())
    if single:
        return _json_value(evaluate(single.group("expression"), context, path), path)
    try:
        text = _compiled_template(source).render(**context)
    except (TemplateError, ArithmeticError, TypeError, ValueError) as error:
        raise RenderError(f"{path}: {_reason(error)}") from None
    if len(text) > MAX_RENDERED_BYTES:
        raise RenderError(f"{path}: rendered text over the {MAX_RENDERED_BYTES}-byte limit")
    return text


def _json_value(value: Any, path: str) -> Any:
    """Expression results must be JSON data (no Undefined, callables or objects)."""
    try:
        return msgspec.json.decode(msgspec.json.encode(value))
    except (TypeError, msgspec.EncodeError):
        raise RenderError(f"{path}: the expression's value is not JSON data") from None


def _reason(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.replace("'dict object'", "the object")


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every secret string replaced by `[redacted]`, at any depth."""
    ordered = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
    if not ordered:
        return value
    pattern = re.compile("|".join(re.escape(secret) for secret in ordered))
    return _redact(value, pattern)


def _redact(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {_redact(k, pattern): _redact(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(item, pattern) for item in value]
    return value


def secret_strings(values: Iterable[Any]) -> set[str]:
    """Every string inside secret values (a secret may be a string, number or JSON object)."""
    found: set[str] = set()
    for value in values:
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found.add(str(value))
        elif isinstance(value, dict):
            found |= secret_strings(value.values())
        elif isinstance(value, list):
            found |= secret_strings(value)
    return found
