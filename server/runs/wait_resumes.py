"""Who resumes a waiting `wait_for_event` step, and how each one is told no.

Every waker calls `server.runs.waits.resume_waiting_step` under the execution's row lock, so a
step resumes once whoever comes first; the others find it no longer WAITING.

- An event with a correlation key (`resume_event_waiters`, from the intake, in the event's
  transaction after the advisory lock of its key: `server.runs.event_waits`): every step
  waiting for that (trigger key, correlation key), in execution order, with the event's payload.
- The API (`resume_from_api`): 404 for an unknown execution or step, 409 (naming what the step
  is) unless it is a WAITING `wait_for_event` step of an unfinished execution.
- A resume link (`resume_from_link`, `link_state`): a token that does not verify, or names a
  step that can no longer be resumed (resumed already, skipped, its execution over) is gone
  (410); a step that has not begun waiting yet is a conflict (409: try again shortly).
- The step's timeout (`WaitTimeout`, the `wait_timeout` job's handler): only the run of the step
  it was queued for (a retried step waits anew).
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec

from server.crypto.resume_tokens import ResumeTarget, ResumeTokens
from server.db.pool import transaction
from server.engine.document import Step, StepKind
from server.engine.planning import FINISHED_EXECUTION, StepStatus
from server.errors import ConflictError, GoneError, NotFoundError
from server.queue.handlers import JobContext
from server.runs import sql
from server.runs.event_waits import TIMEOUT_BRANCH, wait_key_of
from server.runs.waits import RESUMED_BY, resume_waiting_step, resumed_record
from server.statements import Connection

# An event's outcome detail names at most this many executions whose waits it resumed.
NOTED_EXECUTIONS: Final = 10
GONE_DETAIL: Final = (
    "this resume link was used already, or its step no longer waits (it went on, or its "
    "execution ended); nothing was changed"
)


async def resume_event_waiters(
    connection: Connection,
    *,
    trigger_key: str,
    correlation_key: str,
    event_id: uuid.UUID,
    payload: Any,
) -> list[uuid.UUID]:
    """Resume every step waiting for this event (call in its intake transaction, holding the
    advisory lock of its key); returns their executions' ids."""
    resumed: list[uuid.UUID] = []
    detail = {"event_id": str(event_id), "payload": payload}
    for row in await sql.WAITERS.fetch(
        connection, wait_key=wait_key_of(trigger_key, correlation_key)
    ):
        step = Step(
            key=row["step_key"], kind=StepKind(row["kind"]), cfg=msgspec.json.decode(row["cfg"])
        )
        if await resume_waiting_step(
            connection, row["execution_id"], row["step_id"], step, resumed_by="event", detail=detail
        ):
            resumed.append(row["execution_id"])
    if resumed:
        shown = ", ".join(str(execution_id) for execution_id in resumed[:NOTED_EXECUTIONS])
        more = len(resumed) - NOTED_EXECUTIONS
        more_text = f" and {more} more" if more > 0 else ""
        await sql.NOTE_RESUMED_WAITS.execute(
            connection, event_id=event_id, note=f"resumed waiting steps of {shown}{more_text}"
        )
    return resumed


class _Found(msgspec.Struct, frozen=True, kw_only=True):
    """A step of an execution, read under its row lock (`sql.RESUMABLE_STEP`)."""

    step: Step
    step_id: uuid.UUID
    step_run: uuid.UUID | None
    status: StepStatus | None  # None: not run yet
    resumed_by: str | None  # set: resumed already (its second half is pending or running)
    execution_finished: bool
    execution_status: str


async def _find(
    connection: Connection, execution_id: uuid.UUID, step_key: str, *, lock: bool = True
) -> _Found | None:
    """The step, under its execution's row lock (unless `lock` is False: only reading); None:
    no such execution or step."""
    if lock and await sql.LOCK_EXECUTION.fetchrow(connection, execution_id=execution_id) is None:
        return None
    row = await sql.RESUMABLE_STEP.fetchrow(
        connection, execution_id=execution_id, step_key=step_key
    )
    if row is None:
        return None
    record = resumed_record(row["result_data"])
    return _Found(
        step=Step(key=step_key, kind=StepKind(row["kind"]), cfg=msgspec.json.decode(row["cfg"])),
        step_id=row["step_id"],
        step_run=row["step_run"],
        status=StepStatus(row["status"]) if row["status"] else None,
        resumed_by=record[RESUMED_BY] if record else None,
        execution_finished=row["execution_status"] in FINISHED_EXECUTION,
        execution_status=row["execution_status"],
    )


async def _resume(
    connection: Connection, execution_id: uuid.UUID, found: _Found, resumed_by: str, payload: Any
) -> None:
    await resume_waiting_step(
        connection, execution_id, found.step_id, found.step,
        resumed_by=resumed_by, detail={"payload": payload},
    )  # fmt: skip


# --- The API -------------------------------------------------------------------------------


async def resume_from_api(execution_id: uuid.UUID, step_key: str, payload: Any) -> None:
    """Resume a waiting `wait_for_event` step with `payload`.

    Raises:
        NotFoundError: no such execution, or no such step in its version.
        ConflictError: the step is not a WAITING `wait_for_event` step of an unfinished
            execution; the message says what it is.
    """
    async with transaction() as tx:
        connection: Connection = tx.connection
        found = await _find(connection, execution_id, step_key)
        if found is None:
            raise NotFoundError(
                f"execution {execution_id} not found, or its workflow version has no step "
                f"{step_key!r}; GET /api/v1/executions/{execution_id} lists its steps"
            )
        refusal = _api_refusal(execution_id, found)
        if refusal is not None:
            raise ConflictError(refusal)
        await _resume(connection, execution_id, found, "api", payload)


def _api_refusal(execution_id: uuid.UUID, found: _Found) -> str | None:
    key = found.step.key
    if found.step.kind is not StepKind.WAIT_FOR_EVENT:
        return (
            f"step {key!r} is of kind {found.step.kind}; only wait_for_event steps can be resumed"
        )
    if found.execution_finished:
        return f"execution {execution_id} is {found.execution_status}; its steps wait no more"
    if found.resumed_by is not None:
        return f"step {key!r} was resumed already (by {found.resumed_by}); it resumes once"
    if found.status is not StepStatus.WAITING:
        state = "has not started yet" if found.status is None else f"is {found.status}"
        return f"step {key!r} {state}; only a WAITING step can be resumed"
    return None


# --- Resume links --------------------------------------------------------------------------


async def resume_from_link(tokens: ResumeTokens, token: str, payload: Any) -> ResumeTarget:
    """Resume the step a resume link names with `payload`; returns what it named.

    Raises:
        GoneError: the token does not verify, or the step can no longer be resumed.
        ConflictError: the step has not begun waiting yet (try again shortly).
    """
    target = tokens.verify(token)
    if target is None:
        raise GoneError(GONE_DETAIL)
    async with transaction() as tx:
        connection: Connection = tx.connection
        found = await _find(connection, target.execution_id, target.step_key)
        _refuse_link(found)
        assert found is not None  # noqa: S101 - _refuse_link refuses None
        await _resume(connection, target.execution_id, found, "url", payload)
    return target


async def link_state(tokens: ResumeTokens, token: str) -> str:
    """The step key a resume link would resume now (reading only; for its confirmation page).

    Raises:
        GoneError, ConflictError: as `resume_from_link` would.
    """
    target = tokens.verify(token)
    if target is None:
        raise GoneError(GONE_DETAIL)
    async with transaction() as tx:
        found = await _find(tx.connection, target.execution_id, target.step_key, lock=False)
        _refuse_link(found)
    return target.step_key


def _refuse_link(found: _Found | None) -> None:
    if (
        found is None
        or found.step.kind is not StepKind.WAIT_FOR_EVENT
        or found.execution_finished
        or found.resumed_by is not None
        or found.status not in (None, StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING)
    ):
        raise GoneError(GONE_DETAIL)
    if found.status is not StepStatus.WAITING:
        raise ConflictError(
            f"step {found.step.key!r} has not begun waiting yet; try the link again in a moment"
        )


# --- The timeout ---------------------------------------------------------------------------


class WaitTimeout:
    """Callable job handler for `wait_timeout` jobs: the step's run it was queued for, if it
    still waits, resumes with `resumed_by` timeout and what it waited for."""

    async def __call__(self, job: JobContext) -> None:
        execution_id = uuid.UUID(job.payload["execution_id"])
        step_run = uuid.UUID(job.payload["step_run"])
        async with job.transaction() as connection:
            found = await _find(connection, execution_id, str(job.payload["step_key"]))
            if found is None or found.step_run != step_run:
                return  # deleted, or the step was retried and waits anew with its own job
            if found.status is not StepStatus.WAITING or found.execution_finished:
                return  # resumed by something else first
            await resume_waiting_step(
                connection, execution_id, found.step_id, found.step, resumed_by=TIMEOUT_BRANCH
            )
