"""What can be known of a template before it runs: limits it would certainly exceed, and
which variables it reads. Pure, over Jinja2's parsed tree.

`static_problem` refuses at design time what the sandbox would refuse at run time anyway, when
the arguments are constants: `"x"|center(10**9)`, `"%300000000s" % x`, `range(10**6)`, nested
loops over constant ranges whose iterations multiply past the limit, and methods the sandbox
never allows. `variable_reads` says which `vars.<key>` a template reads and whether it reads
`vars` as a whole (`vars|tojson`, `vars[name]`): the engine stores anything rendered from a
secret variable as `[redacted]`, and validation refuses unknown variables. `step_reads` says
the same of `steps.<key>`: validation refuses unknown steps and steps that cannot have run yet.
"""

from __future__ import annotations

import itertools
from typing import Any, Final

import msgspec
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import MAX_RANGE

from server.engine.budget import MAX_LOOP_ITERATIONS, Budget
from server.engine.sandbox import (
    FILTER_CHECKS,
    check_power,
    check_printf,
    check_repeat,
    text_method_check,
)

VARIABLES: Final = "vars"
STEPS: Final = "steps"


class VariableReads(msgspec.Struct, frozen=True, kw_only=True):
    """The `vars.<key>` names a template reads; `whole`: it reads `vars` in another way."""

    keys: frozenset[str]
    whole: bool
    assigned: bool = False  # the template assigns the name (`{% set vars = ... %}`, a loop)

    def reads_any(self, keys: frozenset[str]) -> bool:
        return bool(keys) and (self.whole or not self.keys.isdisjoint(keys))


def static_problem(tree: nodes.Node) -> str | None:
    """The first limit the template certainly exceeds whatever its inputs, or None."""
    try:
        _check_node(tree)
        _check_loops(tree, 1)
    except SecurityError as error:
        return f"template would be refused when it runs: {error.message}"
    return None


def _const(node: nodes.Node | None, default: Any = None) -> Any:
    """The value of a constant integer or string expression (`10**9`, `-1`), else `default`."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.Neg):
        value = _const(node.node)
        return -value if _is_int(value) else default
    if isinstance(node, nodes.Pow | nodes.Mul | nodes.Add | nodes.Sub):
        left, right = _const(node.left), _const(node.right)
        if not (_is_int(left) and _is_int(right)):
            return default
        if isinstance(node, nodes.Pow):
            check_power(left, right)
            return left**right if right >= 0 else default
        return {nodes.Mul: left * right, nodes.Add: left + right, nodes.Sub: left - right}[
            type(node)
        ]
    return default


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_node(tree: nodes.Node) -> None:
    budget = Budget()
    kinds = (nodes.Filter, nodes.Call, nodes.Mul, nodes.Pow, nodes.Mod)
    for node in itertools.chain([tree], tree.find_all(kinds)):
        if isinstance(node, nodes.Filter) and node.name in FILTER_CHECKS:
            args = tuple(_const(arg) for arg in node.args)
            kwargs = {str(kw.key): _const(kw.value) for kw in node.kwargs}
            FILTER_CHECKS[node.name](budget, _const(node.node, ""), args, kwargs)
        elif isinstance(node, nodes.Call):
            _check_call(budget, node)
        elif isinstance(node, nodes.Mul):
            check_repeat(budget, _const(node.left), _const(node.right))
            check_repeat(budget, _const(node.right), _const(node.left))
        elif isinstance(node, nodes.Pow):
            _const(node)
        elif isinstance(node, nodes.Mod) and isinstance(_const(node.left), str):
            check_printf(node.left.value)  # type: ignore[attr-defined]


def _check_call(budget: Budget, node: nodes.Call) -> None:
    args = tuple(_const(arg) for arg in node.args)
    if isinstance(node.node, nodes.Getattr):
        owner = _const(node.node.node, "")
        if isinstance(owner, str | bytes):
            text_method_check(budget, owner, node.node.attr, args)
    elif isinstance(node.node, nodes.Name) and node.node.name == "range":
        _range_length(node)


def _range_length(node: nodes.Node) -> int | None:
    """The length of `range(<constants>)`, refused over Jinja2's maximum; None if unknown."""
    if not (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name)):
        return None
    if node.node.name != "range" or node.kwargs or node.dyn_args or node.dyn_kwargs:
        return None
    args = [_const(arg) for arg in node.args]
    if not args or not all(isinstance(arg, int) for arg in args):
        return None
    try:
        length = len(range(*args))
    except (ValueError, OverflowError):
        return None
    if length > MAX_RANGE:
        raise SecurityError(f"range() of {length} items; at most {MAX_RANGE}")
    return length


def _check_loops(node: nodes.Node, outer: int) -> None:
    """Nested loops over constant ranges: their iterations multiply."""
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.For):
            length = _range_length(child.iter)
            total = outer * (length if length is not None else 1)
            if total > MAX_LOOP_ITERATIONS:
                raise SecurityError(
                    f"nested loops of {total} iterations; the limit is {MAX_LOOP_ITERATIONS}"
                    " loop iterations per render"
                )
            _check_loops(child, total)
        else:
            _check_loops(child, outer)


def variable_reads(tree: nodes.Node) -> VariableReads:
    """The variables a parsed template or expression reads."""
    return name_reads(tree, VARIABLES)


def step_reads(tree: nodes.Node) -> VariableReads:
    """The earlier steps a parsed template or expression reads (`steps.<key>` with a constant
    key); `whole`: it reads `steps` in another way (`steps|tojson`, `steps[name]`)."""
    return name_reads(tree, STEPS)


def name_reads(tree: nodes.Node, name: str) -> VariableReads:
    """The constant keys read from the context name `name` (`name.key`, `name["key"]`), and
    whether the name is read in another way or assigned (then what it reads is unknown)."""
    keys: set[str] = set()
    uses = 0
    lookups = (nodes.Getattr, nodes.Getitem)
    for node in itertools.chain([tree], tree.find_all(lookups)):
        if not isinstance(node, lookups):
            continue
        target = node.node
        if isinstance(target, nodes.Name) and target.name == name:
            key = node.attr if isinstance(node, nodes.Getattr) else _const(node.arg)
            if isinstance(key, str):
                keys.add(key)
                uses += 1
    names = [
        found
        for found in itertools.chain([tree], tree.find_all(nodes.Name))
        if isinstance(found, nodes.Name) and found.name == name
    ]
    assigned = any(found.ctx != "load" for found in names)
    return VariableReads(
        keys=frozenset(keys), whole=assigned or len(names) > uses, assigned=assigned
    )


def call_reads(tree: nodes.Node, function: str) -> VariableReads:
    """The constant first arguments of the calls to the context function `function`
    (`resume_url('approval')` reads `approval`); `whole`: a call with another argument."""
    keys: set[str] = set()
    other = False
    for node in tree.find_all(nodes.Call):
        if not (isinstance(node.node, nodes.Name) and node.node.name == function):
            continue
        argument = _const(node.args[0]) if len(node.args) == 1 and not node.kwargs else None
        if isinstance(argument, str):
            keys.add(argument)
        else:
            other = True
    return VariableReads(keys=frozenset(keys), whole=other)
