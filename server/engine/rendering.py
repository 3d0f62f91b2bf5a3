"""Rendering a step's cfg, evaluating conditions, and redacting secrets. Pure.

String values of a cfg are Jinja2 templates over `trigger`, `steps.<key>.output`, `vars.<key>`
and `execution` (the sandboxed, strict environment of `server.engine.templates`). A string
that is exactly one `{{ expression }}` keeps the expression's type (`"{{ trigger.items }}"`
renders a list, not its text); any other template renders to a string. Rendered output is
bounded. A failure names the cfg path and Jinja2's reason (`cfg.title: 'dict object' has no
attribute 'nam'`). Redaction replaces every occurrence of a secret value in a JSON value.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus

import msgspec
from jinja2 import Template, Undefined
from jinja2.environment import TemplateExpression

from server.engine.budget import (
    Budget,
    SliceSpentError,
    current_budget,
    end_budget,
    start_budget,
)
from server.engine.templates import (
    ENVIRONMENT,
    is_template,
    single_expression,
    template_variable_reads,
)

MAX_RENDERED_BYTES = 256 * 1024
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary text; they are not secrets
MIN_DESIGN_SECRET_LENGTH = 8  # secret variables shorter than this are refused when saved
# Whatever a template raises is the template's failure (a filter given the wrong type raises
# AttributeError or KeyError, a nesting the compiler refuses SyntaxError), except the signal to
# run it again off the event loop.
_TEMPLATE_FAILURES = Exception


class RenderError(ValueError):
    """A template or expression failed; the message names where and why."""


class RenderedCfg(msgspec.Struct, frozen=True, kw_only=True):
    """A rendered cfg; `shown` is it as it may be stored (values rendered from secret variables
    are `[redacted]`), `tainted` those values themselves, for redacting outputs and errors."""

    value: dict[str, Any]
    shown: dict[str, Any]
    tainted: list[Any]


def render_cfg(
    cfg: Mapping[str, Any], context: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()
) -> RenderedCfg:
    """`cfg` with every template rendered against `context`, under the current budget."""
    tainted: list[Any] = []
    value: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    for key, item in cfg.items():
        value[key], shown[key] = _render(item, context, f"cfg.{key}", secret_keys, tainted)
    size = len(msgspec.json.encode(value))
    if size > MAX_RENDERED_BYTES:
        raise RenderError(
            f"rendered cfg is {size} bytes, over the {MAX_RENDERED_BYTES}-byte limit; "
            "pass references to large data instead of the data itself"
        )
    return RenderedCfg(value=value, shown=shown, tainted=tainted)


def evaluate(expression: str, context: Mapping[str, Any], where: str = "expression") -> Any:
    """The value of one expression (conditions, switch cases, subscription filters)."""
    try:
        value = _compiled(expression, _compile_expression)(**context)
        if isinstance(value, Undefined):
            str(value)  # StrictUndefined raises here, naming the missing name
    except SliceSpentError:
        raise
    except _TEMPLATE_FAILURES as error:
        raise RenderError(f"{where}: {_reason(error)} in `{expression.strip()}`") from None
    return value


def with_budget(budget: Budget, function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` with `budget` as the budget of the renders it makes."""
    token = start_budget(budget)
    try:
        return function(*args)
    finally:
        end_budget(token)


# Compiling is most of the cost of a render and depends only on the source; published versions
# never change, so the same few sources recur on every execution. Errors are not cached. The
# cache is shared by the event loop and the render threads, hence the lock. An inline attempt
# never compiles (that is work of unknown size): it asks for a thread instead.
COMPILED_CACHE_SIZE: Final = 1024
_compiled_cache: OrderedDict[tuple[str, bool], Any] = OrderedDict()
_compiled_lock = threading.Lock()


def _compile_expression(source: str) -> TemplateExpression:
    return ENVIRONMENT.compile_expression(source, undefined_to_none=False)


def _compile_template(source: str) -> Template:
    return ENVIRONMENT.from_string(source)


def _compiled(source: str, compile_source: Callable[[str], Any]) -> Any:
    key = (source, compile_source is _compile_expression)
    with _compiled_lock:
        found = _compiled_cache.get(key)
        if found is not None:
            _compiled_cache.move_to_end(key)
            return found
    current_budget().compiling()
    compiled = compile_source(source)
    with _compiled_lock:
        _compiled_cache[key] = compiled
        if len(_compiled_cache) > COMPILED_CACHE_SIZE:
            _compiled_cache.popitem(last=False)
    return compiled


def _render(
    value: Any,
    context: Mapping[str, Any],
    path: str,
    secret_keys: frozenset[str],
    tainted: list[Any],
) -> tuple[Any, Any]:
    """The rendered value and the value as shown (redacted where it came from a secret)."""
    if isinstance(value, str):
        if not is_template(value):
            return value, value
        rendered, secret = _render_string(value, context, path, secret_keys)
        if secret:
            tainted.append(rendered)
            return rendered, REDACTED
        return rendered, rendered
    if isinstance(value, dict):
        pairs = {
            k: _render(v, context, f"{path}.{k}", secret_keys, tainted) for k, v in value.items()
        }
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    if isinstance(value, list):
        items = [
            _render(v, context, f"{path}[{i}]", secret_keys, tainted) for i, v in enumerate(value)
        ]
        return [p[0] for p in items], [p[1] for p in items]
    return value, value


def _render_string(
    source: str, context: Mapping[str, Any], path: str, secret_keys: frozenset[str]
) -> tuple[Any, bool]:
    """The rendered value, and whether the template read a secret variable."""
    expression = single_expression(source)
    if expression is not None:
        secret = template_variable_reads(expression, expression=True).reads_any(secret_keys)
        return _json_value(evaluate(expression, context, path), path), secret
    secret = template_variable_reads(source).reads_any(secret_keys)
    try:
        template = _compiled(source, _compile_template)
        text = _render_text(template, context)
    except SliceSpentError:
        raise
    except _TEMPLATE_FAILURES as error:
        raise RenderError(f"{path}: {_reason(error)}") from None
    if text is None:
        raise RenderError(f"{path}: rendered text over the {MAX_RENDERED_BYTES}-byte limit")
    return text, secret


def _render_text(template: Template, context: Mapping[str, Any]) -> str | None:
    """The template's text, or None once it grows past MAX_RENDERED_BYTES characters."""
    chunks: list[str] = []
    length = 0
    for chunk in template.root_render_func(template.new_context(dict(context))):
        length += len(chunk)
        if length > MAX_RENDERED_BYTES:
            return None
        chunks.append(chunk)
    return "".join(chunks)


def _json_value(value: Any, path: str) -> Any:
    """Expression results must be JSON data (no Undefined, callables or objects)."""
    if isinstance(value, str):
        return str(value)  # also Markup (`tojson`'s result), which msgspec does not encode
    try:
        return msgspec.json.decode(msgspec.json.encode(value))
    except (TypeError, msgspec.EncodeError):
        raise RenderError(f"{path}: the expression's value is not JSON data") from None


def _reason(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.replace("'dict object'", "the object")


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every secret string replaced by `[redacted]`, at any depth, in any letter
    case and URL-encoded too; a number equal to a secret is replaced whole."""
    forms = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
    forms |= {encoded for s in forms for encoded in (quote(s, safe=""), quote_plus(s))}
    if not forms:
        return value
    ordered = sorted(forms, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(secret) for secret in ordered), re.IGNORECASE)
    return _redact(value, pattern)


def _redact(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {_redact(k, pattern): _redact(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(item, pattern) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return REDACTED if pattern.fullmatch(str(value)) else value
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
