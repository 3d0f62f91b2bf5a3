"""Steps that wait for something outside them, and how they are resumed exactly once.

The flow steps (`call_workflow`, `foreach`, `wait_for_event`; DESIGN §5.1) run in two halves:

1. Their first run starts what they wait for (child executions, or a wait for an event) in
   the transaction that records the step WAITING (`server.runs.step_runner`), so what they
   start exists exactly when the wait does: a worker killed before the commit leaves neither,
   and the job runs the step again.
2. A waker (a child execution's end, through its `execution_ended` job; an event with the
   awaited correlation key; `POST .../steps/{key}/resume` or a signed resume URL; a timeout
   job) calls `resume_waiting_step`: under the execution's row lock, a WAITING step becomes
   PENDING with what resumed it in its `result_data`, and gets its job, in the waker's
   transaction. Only one waker can find it WAITING, so the step resumes once; the others see
   `False`. The job then runs the step's second half, which reads what resumed it
   (`resumed_by`) and finishes the step like any other (its successors, its error edge).

Nothing here sleeps or polls: a waiting step holds no worker, only rows.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec

from server.engine.document import Step
from server.queue.client import job_arrays
from server.runs import sql
from server.runs.jobs import step_job
from server.runs.store import json_text
from server.statements import Connection

# The key of `result_data` that marks a step as resumed (its second half runs).
RESUMED_BY: Final = "resumed_by"


async def resume_waiting_step(
    connection: Connection,
    execution_id: uuid.UUID,
    step_id: uuid.UUID,
    step: Step,
    *,
    resumed_by: str,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Resume the step if it is WAITING (see the module docstring); True if this call did.
    `detail` is kept with `resumed_by` for the step's second half (an event's payload...)."""
    resumed = {RESUMED_BY: resumed_by, **(detail or {})}
    row = await sql.RESUME_WAITING_STEP.fetchrow(
        connection,
        execution_id=execution_id,
        step_key=step.key,
        resumed=json_text(resumed),
        **job_arrays([step_job(execution_id, step_id, step)]),
    )
    return bool(row and row["resumed"])


def resumed_record(result_data: str | None) -> dict[str, Any] | None:
    """What resumed a step, from its stored `result_data` (None: it was not resumed)."""
    if result_data is None:
        return None
    value = msgspec.json.decode(result_data)
    if isinstance(value, dict) and RESUMED_BY in value:
        return value
    return None
