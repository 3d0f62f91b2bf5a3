"""A step's retry and timeout policy, from its cfg's optional `retry` object and defaults.

Actions retry by default (network effects fail transiently); conditions and delays do not:
their only failures are template errors, which a retry cannot fix. `cfg.retry` may set
`max_attempts`, `backoff_seconds` (first delay, doubling), `max_backoff_seconds` and
`timeout_seconds` (one attempt's limit). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from server.engine.document import Step, StepKind
from server.engine.retry import RetryPolicy

DEFAULT_ACTION_ATTEMPTS: Final = 3
DEFAULT_BACKOFF_SECONDS: Final = 2.0
DEFAULT_MAX_BACKOFF_SECONDS: Final = 300.0
DEFAULT_TIMEOUT_SECONDS: Final = 60.0
# Room left inside the worker's job timeout to record a timed-out attempt.
JOB_TIMEOUT_MARGIN_SECONDS: Final = 5.0


class StepPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_attempts: int
    backoff: RetryPolicy
    timeout_seconds: float


def step_policy(step: Step, *, job_timeout_seconds: float | None = None) -> StepPolicy:
    """The step's policy. Given the worker's job timeout, the step's timeout stays below it, so
    the step's own timeout (a recorded, retryable failure) always fires before the worker's."""
    retry: Mapping[str, Any] = step.cfg.get("retry") or {}
    default_attempts = DEFAULT_ACTION_ATTEMPTS if step.kind is StepKind.ACTION else 1
    timeout = float(retry.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS))
    if job_timeout_seconds is not None:
        timeout = min(timeout, max(job_timeout_seconds - JOB_TIMEOUT_MARGIN_SECONDS, 1.0))
    return StepPolicy(
        max_attempts=int(retry.get("max_attempts", default_attempts)),
        backoff=RetryPolicy(
            base_seconds=float(retry.get("backoff_seconds", DEFAULT_BACKOFF_SECONDS)),
            max_seconds=float(retry.get("max_backoff_seconds", DEFAULT_MAX_BACKOFF_SECONDS)),
        ),
        timeout_seconds=timeout,
    )


def action_cfg(step: Step) -> dict[str, Any]:
    """The cfg an action receives: everything but the engine's own `retry` policy."""
    return {key: value for key, value in step.cfg.items() if key != "retry"}
