"""The `set_variables` and `transform` actions: shape data for later steps, no side effects.

The runtime has already rendered every template in the cfg, so both only hand a value on:
`set_variables` publishes its `values` object as the step's output, and `transform` its
`output` (an object as is; any other value, a list or a string, as `{"value": ...}`, since a
step's output is always an object).
"""

from __future__ import annotations

from server.actions.base import ActionContext, Output
from server.queue.jobs import PermanentError


async def set_variables(context: ActionContext) -> Output:
    values = context.cfg.get("values")
    if not isinstance(values, dict):
        raise PermanentError("set_variables cfg: `values` must be an object")
    return dict(values)


async def transform(context: ActionContext) -> Output:
    if "output" not in context.cfg:
        raise PermanentError("transform cfg: `output` is required")
    output = context.cfg["output"]
    return dict(output) if isinstance(output, dict) else {"value": output}
