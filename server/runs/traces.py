"""The workflow runtime's spans (`server.tracing`): an event's intake and each step attempt,
with the attributes operators search by. Called only when `tracing.ENABLED`.

`intake <trigger key>` covers reading the routes, the filters and the one statement that records
the event and its executions; each execution stores this span's traceparent. `step <key>` covers
one attempt of one step, in whichever worker claims it, as a child of that stored span; its
attributes say which execution, workflow, step and attempt, and how long the job waited in the
queue before this worker claimed it (the first step of a claim; a step handed on to the same
job did not wait).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from server import tracing

if TYPE_CHECKING:
    from server.engine.document import Step
    from server.queue.handlers import JobContext
    from server.runs.intake import AcceptedEvent
    from server.runs.store import ExecutionRow
    from server.tracing import Span

MAX_LISTED_EXECUTIONS: Final = 20  # an intake span lists at most this many execution ids
MILLISECONDS: Final = 1000.0


def intake_span(trigger_key: str, trigger_type: str) -> contextlib.AbstractContextManager[Span]:
    return tracing.span(
        f"intake {trigger_key}",
        {"switchyard.trigger.key": trigger_key, "switchyard.trigger.type": trigger_type},
    )


def describe_intake(span: Span, accepted: AcceptedEvent) -> None:
    """What the intake did: the event, its outcome, the executions it started."""
    span.set_attributes(
        {
            "switchyard.event.id": str(accepted.event_id),
            "switchyard.event.outcome": accepted.outcome,
            "switchyard.event.duplicate": accepted.duplicate,
            "switchyard.execution.count": len(accepted.execution_ids),
            "switchyard.execution.ids": [
                str(execution_id) for execution_id in accepted.execution_ids[:MAX_LISTED_EXECUTIONS]
            ],
        }
    )


@contextlib.contextmanager
def step_span(
    job: JobContext, execution: ExecutionRow, step: Step, *, first_here: bool, resume: bool
) -> Iterator[Span | None]:
    """One attempt of `step`, a child of the execution's intake span; no span (None) for an
    execution that started untraced (tracing was off at its intake)."""
    if execution.traceparent is None:
        yield None
        return
    attributes: dict[str, str | int | float | bool] = {
        "switchyard.execution.id": str(execution.id),
        "switchyard.workflow.id": str(execution.workflow_id),
        "switchyard.workflow.version": execution.version_num,
        "switchyard.step.key": step.key,
        "switchyard.step.kind": step.kind.value,
        "switchyard.step.attempt": job.attempt,
        "switchyard.step.resume": resume,
        "switchyard.job.id": job.job_id,
        "switchyard.job.handed_on": not first_here,
    }
    if step.action_key is not None:
        attributes["switchyard.step.action"] = step.action_key
    waited = job.job.waited
    if first_here and waited is not None:
        attributes["switchyard.queue.wait_ms"] = round(waited.created * MILLISECONDS, 3)
        attributes["switchyard.queue.due_wait_ms"] = round(waited.due * MILLISECONDS, 3)
    with tracing.span(f"step {step.key}", attributes, traceparent=execution.traceparent) as current:
        yield current


def describe_step(status: str, error: str | None) -> None:
    """The current step span's outcome (`error` already redacted); a failure marks it ERROR."""
    current = tracing.current_span()
    current.set_attribute("switchyard.step.status", status)
    if error is not None and status in {"FAILED", "RETRYING"}:
        tracing.mark_failed(current, error)
