"""The template sandbox: Jinja2's immutable sandbox, charging every operation to a budget.

`BoundedSandbox` adds to `ImmutableSandboxedEnvironment` (no attribute escapes, no mutation of
inputs) the accounting of `server.engine.budget`: attribute and item lookups, calls, every binary
operator, every filter, each loop iteration (loops are rewritten at compile time to iterate
through a counting filter) and every output charge the render in progress. Operations whose
arguments say how much they will build (padding widths, repetition, `join`, `replace`, format
widths, `batch`, ...) are checked *before* they run; every other result is measured after, which
is safe because its size is bounded by its already-measured inputs. `~` concatenations are
rewritten to a measured join for the same reason. `lipsum` (unbounded by design) is removed.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from jinja2 import nodes, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer

from server.engine.budget import (
    MAX_FORMAT_WIDTH,
    MAX_INTEGER_BITS,
    MAX_VALUE_LENGTH,
    SLICE_BUILT_UNITS,
    Budget,
    SliceSpentError,
    current_budget,
)

LOOP_FILTER: Final = "loop budget"  # internal names: a space cannot be written in a template
CONCAT_FILTER: Final = "concat budget"
MAX_JSON_INDENT: Final = 8
# printf-style conversions: %[(key)][flags][width][.precision]type
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_SPEC_NUMBER = re.compile(r"\d+")
_SIZED = (str, bytes, list, tuple, dict, set, frozenset, range)


def check_printf(source: str) -> None:
    """Refuse printf formats whose widths or precisions would build large strings."""
    for match in _PRINTF.finditer(source):
        for number in match.groups():
            if number == "*":
                raise SecurityError("`*` widths are not allowed in template formats")
            if number is not None and int(number) > MAX_FORMAT_WIDTH:
                raise SecurityError(f"format widths over {MAX_FORMAT_WIDTH} are not allowed")


def _check_format_spec(source: str) -> None:
    """The same for `str.format` specs (`{:>1000000}`)."""
    for _, _, spec, _ in string.Formatter().parse(source):
        if not spec:
            continue
        if "{" in spec:
            raise SecurityError("nested format fields are not allowed in templates")
        if any(int(n) > MAX_FORMAT_WIDTH for n in _SPEC_NUMBER.findall(spec)):
            raise SecurityError(f"format widths over {MAX_FORMAT_WIDTH} are not allowed")


def deep_size(value: Any, limit: int) -> int:
    """Characters and items inside `value` (containers counted through), stopping past `limit`.
    A container of many references to one large string is as large as what it would print."""
    total = 0
    pending: list[Any] = [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, dict):
            total += len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            pending.extend(item)
    return total


def measure(budget: Budget, value: Any) -> Any:
    """Charge a built value by its deep size (numbers by their bits) and return it."""
    if isinstance(value, str | bytes):
        budget.build(len(value))
    elif isinstance(value, list | tuple | dict | set | frozenset):
        budget.build(deep_size(value, budget.room()))
    elif isinstance(value, int) and value.bit_length() > MAX_INTEGER_BITS:
        budget.fail(f"the limit of {MAX_INTEGER_BITS}-bit numbers")
    else:
        budget.operation()
    return value


def _counted(items: Iterable[Any], budget: Budget) -> list[Any]:
    """`items` as a list, one operation per item, refused past the per-value length."""
    collected = []
    for item in items:
        budget.operation()
        collected.append(item)
        if len(collected) > MAX_VALUE_LENGTH:
            budget.fail(f"the limit of {MAX_VALUE_LENGTH} characters or items per value")
    return collected


def _joined(budget: Budget, separator: str, items: Iterable[Any]) -> str:
    texts = [str(item) for item in _counted(items, budget)]
    budget.build(sum(map(len, texts)) + len(separator) * max(len(texts) - 1, 0))
    return separator.join(texts)


def _replaced(budget: Budget, text: str, old: str, new: str, count: int | None = None) -> None:
    occurrences = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    budget.build(len(text) + occurrences * max(len(new) - len(old), 0))


# Checks run before a filter allocates: (budget, value, positional args, keyword args).
def _pad(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = args[0] if args else kwargs.get("width", 80)
    if isinstance(width, int):
        budget.build(max(width, 0))


def _indent(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = args[0] if args else kwargs.get("width", 4)
    width = len(width) if isinstance(width, str) else width
    if isinstance(width, int):
        budget.build(len(str(value)) + max(width, 0) * (str(value).count("\n") + 1))


def _wordwrap(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text = str(value)
    width = args[0] if args else kwargs.get("width", 79)
    wrap = kwargs.get("wrapstring") or (args[2] if len(args) > 2 and args[2] else "\n")
    lines = len(text) // max(width, 1) + text.count(" ") + text.count("\n") + 1
    budget.build(len(text) + len(str(wrap)) * lines)


def _replace(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count")
        _replaced(budget, str(value), str(args[0]), str(args[1]), count)


def _format(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    check_printf(str(value))


def _count_arg(
    position: int, name: str
) -> Callable[[Budget, Any, tuple[Any, ...], dict[str, Any]], None]:
    def check(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        count = args[position] if len(args) > position else kwargs.get(name)
        if isinstance(count, int) and count > MAX_VALUE_LENGTH:
            budget.fail(f"the limit of {MAX_VALUE_LENGTH} characters or items per value")

    return check


def _tojson(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    indent = args[0] if args else kwargs.get("indent")
    if isinstance(indent, int) and indent > MAX_JSON_INDENT:
        raise SecurityError(f"tojson indents over {MAX_JSON_INDENT} are not allowed")


FILTER_CHECKS: Final = {
    "center": _pad,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "format": _format,
    "batch": _count_arg(0, "linecount"),
    "slice": _count_arg(0, "slices"),
    "tojson": _tojson,
}


def _guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    check = FILTER_CHECKS.get(name)
    first = 1 if _PassArg.from_obj(function) is not None else 0

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.operation()
        value = args[first] if len(args) > first else None
        if budget.inline and isinstance(value, _SIZED) and len(value) > SLICE_BUILT_UNITS:
            raise SliceSpentError
        if check is not None:
            check(budget, value, args[first + 1 :], kwargs)
        return measure(budget, function(*args, **kwargs))

    return guarded


@pass_eval_context
def _join_filter(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    budget = current_budget()
    if attribute is not None:
        getter = make_attrgetter(eval_ctx.environment, attribute)
        value = map(getter, value)
    return _joined(budget, str(d), value)


def _sum_filter(iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    """`sum`, charging each partial sum: adding lists or strings is quadratic otherwise."""
    budget = current_budget()
    total = start
    for item in iterable:
        total = total + (item if attribute is None else item[attribute])
        measure(budget, total)
    return total


def _loop_filter(iterable: Iterable[Any], constant_output: int = 0) -> Iterator[Any]:
    budget = current_budget()
    for item in iterable:
        budget.iteration(constant_output)
        yield item


def _concat_filter(parts: tuple[Any, ...]) -> str:
    return _joined(current_budget(), "", parts)


# Calls of these str and bytes methods are checked before they run; the others are linear.
def text_method_check(budget: Budget, owner: Any, name: str, args: tuple[Any, ...]) -> None:
    if name in {"center", "ljust", "rjust", "zfill"} and args and isinstance(args[0], int):
        budget.build(max(args[0], len(owner)))
    elif name == "expandtabs":
        tab = args[0] if args and isinstance(args[0], int) else 8
        budget.build(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * tab)
    elif name == "replace" and len(args) >= 2 and isinstance(owner, str):
        count = args[2] if len(args) > 2 else None
        _replaced(budget, owner, str(args[0]), str(args[1]), count)
    elif name in {"translate", "maketrans"}:
        raise SecurityError(f"{name} is not allowed in templates")


class _BudgetRewriter(NodeTransformer):
    """Loops iterate through the counting filter; `~` joins through the measured one."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - Jinja2's visitor naming
        self.generic_visit(node)
        constant = sum(len(data.data) for data in node.find_all(nodes.TemplateData))
        node.iter = nodes.Filter(
            node.iter, LOOP_FILTER, [nodes.Const(constant)], [], None, None, lineno=node.lineno
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802 - Jinja2's visitor naming
        self.generic_visit(node)
        parts = nodes.Tuple(node.nodes, "load", lineno=node.lineno)
        return nodes.Filter(parts, CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every operation charged to the render's budget."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._output, **options)
        self.globals.pop("lipsum", None)
        self.filters = {name: _guarded_filter(name, f) for name, f in FILTERS.items()}
        self.filters["join"] = _join_filter
        self.filters["sum"] = _sum_filter
        self.filters[LOOP_FILTER] = _loop_filter
        self.filters[CONCAT_FILTER] = _concat_filter

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        rewritten = _BudgetRewriter().visit(source)
        rewritten.set_environment(self)
        return super()._generate(rewritten, name, filename, defer_init)

    @staticmethod
    def _output(value: Any) -> Any:
        budget = current_budget()
        measure(budget, value if isinstance(value, str) else str(value))
        return value

    def getattr(self, obj: Any, attribute: str) -> Any:
        current_budget().operation()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        current_budget().operation()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja2's signature
        budget = current_budget()
        budget.operation()
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str | bytes):
            if budget.inline and len(owner) > SLICE_BUILT_UNITS:
                raise SliceSpentError
            text_method_check(budget, owner, name, args)
            if name == "join" and len(args) == 1 and not kwargs:
                items = _counted(args[0], budget)
                sizes = sum(len(item) if isinstance(item, str | bytes) else 0 for item in items)
                budget.build(sizes + len(owner) * max(len(items) - 1, 0))
                args = (items,)
        elif isinstance(owner, int) and name == "to_bytes" and args and isinstance(args[0], int):
            budget.build(args[0])
        return measure(budget, super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.operation()
        if operator == "*":
            check_repeat(budget, left, right)
            check_repeat(budget, right, left)
        elif operator == "**":
            check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            check_printf(left)
        return measure(budget, super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` and `format_map` with their specs checked and their result measured."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_format_spec(value.__self__)

        @functools.wraps(wrapped)
        def measured(*args: Any, **kwargs: Any) -> str:
            return measure(current_budget(), wrapped(*args, **kwargs))  # type: ignore[no-any-return]

        return measured


def check_repeat(budget: Budget, sequence: Any, times: Any) -> None:
    if isinstance(times, bool) or not isinstance(times, int):
        return
    if isinstance(sequence, str | bytes):
        budget.build(len(sequence) * max(times, 0))
    elif isinstance(sequence, list | tuple):
        budget.build(deep_size(sequence, budget.room()) * max(times, 0))
    elif (
        isinstance(sequence, int)
        and not isinstance(sequence, bool)
        and sequence.bit_length() + times.bit_length() > MAX_INTEGER_BITS
    ):
        budget.fail(f"the limit of {MAX_INTEGER_BITS}-bit numbers")


def check_power(base: Any, exponent: Any) -> None:
    integers = isinstance(base, int) and isinstance(exponent, int)
    if integers and abs(base) > 1 and exponent * abs(base).bit_length() > MAX_INTEGER_BITS:
        raise SecurityError(f"a template may not compute numbers over {MAX_INTEGER_BITS} bits")
