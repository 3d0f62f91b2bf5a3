"""The runtime's queue jobs: one `workflow_step` job per runnable step of an execution.

A step job's unique key allows at most one live job per step of an execution (a delay's
wake-up is a second key), so a step planned twice (a racing join, a retry) is queued once.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from server.engine.document import Step
from server.engine.step_policy import step_policy
from server.queue.jobs import NewJob

STEP_JOB_KIND: Final = "workflow_step"
# A step job may be claimed more often than the step's own attempts: a worker killed mid-step
# or a lost database connection costs an attempt too. The step's policy decides when an
# action's failures are final; these extra attempts only absorb infrastructure failures.
INFRASTRUCTURE_ATTEMPTS: Final = 5


def step_job_key(execution_id: uuid.UUID, step_id: uuid.UUID, *, resume: bool = False) -> str:
    return execution_job_prefix(execution_id) + str(step_id) + (":resume" if resume else "")


def execution_job_prefix(execution_id: uuid.UUID) -> str:
    """The unique-key prefix of every step job of one execution (to withdraw them all)."""
    return f"step:{execution_id}:"


def step_job(
    execution_id: uuid.UUID,
    step_id: uuid.UUID,
    step: Step,
    *,
    resume: bool = False,
    delay_seconds: float = 0.0,
) -> NewJob:
    payload: dict[str, Any] = {"execution_id": str(execution_id), "step_key": step.key}
    if resume:
        payload["resume"] = True
    return NewJob(
        kind=STEP_JOB_KIND,
        payload=payload,
        max_attempts=step_policy(step).max_attempts + INFRASTRUCTURE_ATTEMPTS,
        unique_key=step_job_key(execution_id, step_id, resume=resume),
        delay_seconds=delay_seconds,
    )
