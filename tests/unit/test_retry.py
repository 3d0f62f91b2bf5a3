"""Retry decisions: exponential backoff with jitter, explicit delays, giving up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.engine.retry import GiveUp, Retry, RetryPolicy, backoff_seconds, decide_retry

POLICY = RetryPolicy(base_seconds=1.0, factor=2.0, max_seconds=60.0, jitter=0.5)


def decide(attempts: int, **overrides: object) -> Retry | GiveUp:
    arguments: dict[str, object] = {
        "attempts": attempts,
        "max_attempts": 5,
        "requested_delay": None,
        "permanent": False,
        "policy": POLICY,
        "draw": 0.0,
    }
    arguments.update(overrides)
    return decide_retry(**arguments)  # type: ignore[arg-type]


def test_backoff_doubles_from_the_base_until_the_cap() -> None:
    delays = [backoff_seconds(failures, POLICY, draw=0.0) for failures in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_jitter_shortens_the_delay_by_up_to_its_fraction() -> None:
    assert backoff_seconds(3, POLICY, draw=0.5) == 4.0 * 0.75
    assert backoff_seconds(3, POLICY, draw=0.999) == pytest.approx(2.0, abs=0.01)
    assert backoff_seconds(3, RetryPolicy(jitter=0.0), draw=0.9) == 4.0


def test_a_huge_attempt_number_stays_at_the_cap() -> None:
    assert backoff_seconds(10_000, POLICY, draw=0.0) == 60.0


@given(failures=st.integers(1, 500), draw=st.floats(0.0, 1.0, exclude_max=True))
def test_backoff_is_within_jitter_of_the_capped_exponential(failures: int, draw: float) -> None:
    full = min(POLICY.base_seconds * POLICY.factor ** min(failures - 1, 64), POLICY.max_seconds)
    delay = backoff_seconds(failures, POLICY, draw)
    assert full * (1 - POLICY.jitter) <= delay <= full


@pytest.mark.parametrize(("failures", "draw"), [(0, 0.0), (1, 1.0), (1, -0.1)])
def test_backoff_refuses_impossible_inputs(failures: int, draw: float) -> None:
    with pytest.raises(ValueError, match=r"must be|counts from 1"):
        backoff_seconds(failures, POLICY, draw)


def test_a_failed_attempt_with_attempts_left_is_retried_after_the_backoff() -> None:
    assert decide(1) == Retry(delay_seconds=1.0)
    assert decide(3, draw=0.5) == Retry(delay_seconds=3.0)


def test_an_explicit_delay_replaces_the_backoff() -> None:
    assert decide(4, requested_delay=120.0) == Retry(delay_seconds=120.0)
    assert decide(1, requested_delay=0.0) == Retry(delay_seconds=0.0)


def test_the_last_attempt_gives_up_even_with_an_explicit_delay() -> None:
    assert decide(5) == GiveUp(reason="gave up after 5 of 5 attempts")
    assert decide(5, requested_delay=1.0) == GiveUp(reason="gave up after 5 of 5 attempts")


def test_a_permanent_failure_gives_up_at_once() -> None:
    assert decide(1, permanent=True) == GiveUp(reason="permanent failure on attempt 1")
