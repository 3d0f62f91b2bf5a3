from __future__ import annotations

import time

import pytest

from server.engine.document import Step, StepKind
from server.engine.rendering import RenderError, render_cfg
from server.engine.step_policy import step_policy


@pytest.mark.parametrize(
    "template",
    [
        '{{ "a" * 300000000 }}',
        "{{ 2 ** 100000000 }}",
        '{{ "%999999999s" % 1 }}',
        "{{ [1] * 10**8 }}",
        "x{{ 'ab' * 10**7 }}",
    ],
)
def test_templates_cannot_allocate_without_bound(template: str) -> None:
    started = time.monotonic()
    with pytest.raises(RenderError, match=r"may not|not allowed|exceeded the limit"):
        render_cfg({"v": template}, {})
    assert time.monotonic() - started < 0.5


def test_ordinary_arithmetic_and_repetition_still_work() -> None:
    assert render_cfg({"a": "{{ 'ab' * 3 }}", "b": "{{ 2 ** 10 }}", "c": "{{ '%3s' % 1 }}"}, {}).value == {
        "a": "ababab", "b": 1024, "c": "  1",
    }  # fmt: skip


def test_a_step_timeout_stays_below_the_job_timeout() -> None:
    step = Step(
        key="s",
        kind=StepKind.ACTION,
        action_key="http_request",
        cfg={"retry": {"timeout_seconds": 3600}},
    )
    assert step_policy(step, job_timeout_seconds=300).timeout_seconds == 295
    assert step_policy(step).timeout_seconds == 3600
    assert (
        step_policy(Step(key="s", kind=StepKind.DELAY), job_timeout_seconds=2).timeout_seconds == 1
    )
