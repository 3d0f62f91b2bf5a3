"""An execution's outcome for a caller that waits for it (a webhook in `sync` mode).

The outcome of a finished execution is its status, error, and `output`: the `result_data` of
each step that ended the path the run took, keyed by step key. A step ends the path when it
succeeded and none of the steps its edges lead to ran (succeeded or failed): the last step of
a chain, each branch end of a fan-out, a condition whose chosen branch has no step. Waiting
polls the database with a growing interval up to a deadline (the worker may be another
process, and executions send no notification), one short pooled query per poll.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Final

import asyncpg
import msgspec

from server.engine.planning import FINISHED_EXECUTION_SQL

FIRST_POLL_SECONDS = 0.01
MAX_POLL_SECONDS = 0.25
ACQUIRE_TIMEOUT_SECONDS = 5.0

# An execution's output, as a scalar subquery on the execution aliased `{execution}`: the
# result_data of each succeeded step none of whose successors ran, by step key.
FINAL_OUTPUTS: Final = """(
    SELECT coalesce(jsonb_object_agg(s.step_key, s.result_data), '{{}}'::jsonb)
    FROM step_execution s
    WHERE s.execution_id = {execution}.id AND s.status = 'SUCCESS'
      AND NOT EXISTS (
        SELECT 1 FROM workflow_edge edge
        JOIN step_execution next_step
          ON next_step.execution_id = {execution}.id AND next_step.step_id = edge.to_step_id
        WHERE edge.from_step_id = s.step_id AND next_step.status IN ('SUCCESS', 'FAILED'))
)"""

# The output is computed only once the execution has finished (NULL before).
EXECUTION_OUTCOME: Final = f"""
SELECT e.status, e.error,
  CASE WHEN e.status IN {FINISHED_EXECUTION_SQL} THEN {FINAL_OUTPUTS.format(execution="e")}::text
  END AS output
FROM workflow_execution e
WHERE e.id = $1
"""  # noqa: S608 - constant SQL only


class ExecutionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: uuid.UUID
    status: str
    finished: bool
    output: dict[str, Any] | None = None
    error: str | None = None


async def execution_outcome(pool: asyncpg.Pool, execution_id: uuid.UUID) -> ExecutionOutcome:
    """The execution's status now, with its output when it has finished."""
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
        row = await connection.fetchrow(EXECUTION_OUTCOME, execution_id)
    if row is None:  # its workflow was deleted meanwhile, which deletes its executions
        return ExecutionOutcome(
            execution_id=execution_id,
            status="CANCELLED",
            finished=True,
            error=f"execution {execution_id} was deleted with its workflow",
        )
    output = row["output"]
    return ExecutionOutcome(
        execution_id=execution_id,
        status=row["status"],
        finished=output is not None,
        output=None if output is None else msgspec.json.decode(output),
        error=row["error"],
    )


async def wait_for_outcome(
    pool: asyncpg.Pool, execution_id: uuid.UUID, *, timeout_seconds: float
) -> ExecutionOutcome:
    """Poll until the execution finishes or `timeout_seconds` pass; the last outcome seen."""
    deadline = time.monotonic() + timeout_seconds
    interval = FIRST_POLL_SECONDS
    while True:
        outcome = await execution_outcome(pool, execution_id)
        remaining = deadline - time.monotonic()
        if outcome.finished or remaining <= 0:
            return outcome
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, MAX_POLL_SECONDS)
