"""`set_variables` and `transform` hand their rendered cfg on as the step's output."""

from __future__ import annotations

import pytest

from server.actions.transform import set_variables, transform
from server.queue.jobs import PermanentError
from tests.support.action_contexts import action_context


async def test_set_variables_outputs_its_values() -> None:
    output = await set_variables(action_context({"values": {"owner": "ann", "score": 70}}))
    assert output == {"owner": "ann", "score": 70}


async def test_transform_outputs_an_object_as_is_and_wraps_anything_else() -> None:
    assert await transform(action_context({"output": {"a": [1, 2]}})) == {"a": [1, 2]}
    assert await transform(action_context({"output": [1, 2]})) == {"value": [1, 2]}
    assert await transform(action_context({"output": None})) == {"value": None}


async def test_a_missing_or_malformed_cfg_is_permanent() -> None:
    with pytest.raises(PermanentError, match="`values` must be an object"):
        await set_variables(action_context({"values": "x"}))
    with pytest.raises(PermanentError, match="`output` is required"):
        await transform(action_context({}))
