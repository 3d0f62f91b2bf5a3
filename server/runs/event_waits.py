"""`wait_for_event` steps: a durable wait for an event with a correlation key (DESIGN §5.1).

First half (`start_wait`, in the transaction that records the step): the correlation key is
rendered, the advisory lock of (trigger key, correlation key) is taken, then an event of that
trigger key with that correlation key accepted since the execution was created is looked for.
Found: the step succeeds at once with the event's payload as its output. Not found: the step
is WAITING, and once the completion has recorded it (`after_record`, from
`FlowOutcome.recorded`: the execution's row lock is taken before the step's row) its
`wait_key` is set, and with `timeout_seconds` a `wait_timeout` job is queued to resume it then.
The lock is held until that commits, and an event's intake takes it before it records the
event and looks for waiting steps (`server.runs.wait_resumes`), so an event is never missed:
it committed before the wait looked (and the wait finds it), or it waits for the wait's commit
(and finds the waiting step). Lock order, on both sides: this advisory lock, then the
execution's row, then step rows, then jobs.

Second half (`finish_wait`), once resumed (`server.runs.waits`): by an event, the API or a
resume link, the payload is the output and `default` edges follow; by the timeout, the
`timeout` branch is taken when the step has a `timeout` edge, else the step fails (an `error`
edge may take it). A wait resumed before its timeout withdraws its timeout job once the
step's result is recorded, so a year-long timeout leaves no job behind.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from server.engine.bounded import render_cfg_bounded
from server.engine.document import Step
from server.engine.flow_steps import WaitForEventCfg, flow_cfg
from server.engine.planning import StepStatus, success_branches
from server.engine.rendering import RenderError
from server.queue.client import delete_queued_job_by_key, enqueue_job
from server.queue.jobs import NewJob
from server.runs import sql
from server.runs.jobs import execution_job_prefix
from server.runs.step_kinds import Outcome, failed
from server.runs.store import ExecutionRow
from server.runs.waits import RESUMED_BY
from server.statements import Connection

WAIT_TIMEOUT_JOB_KIND: Final = "wait_timeout"
# The advisory lock space of awaited keys (`sql.LOCK_WAIT_KEY`): "wait" in ASCII.
WAIT_LOCK_SPACE: Final = 0x77616974
# A timeout job is a few statements; it may be claimed again after infrastructure failures.
TIMEOUT_JOB_ATTEMPTS: Final = 25
MAX_CORRELATION_KEY_LENGTH: Final = 1000
TIMEOUT_BRANCH: Final = "timeout"


class WaitRun(msgspec.Struct, frozen=True, kw_only=True):
    execution: ExecutionRow
    step: Step
    step_id: uuid.UUID
    step_run: uuid.UUID  # the step_execution row's id (a retried step is a new run)
    first_input: Any  # the first half's recorded input (what it waits for), once resumed
    context: Mapping[str, Any]
    secret_keys: frozenset[str]
    edge_branches: frozenset[str]  # the branch keys of the step's outgoing edges


class WaitWrites(msgspec.Struct, frozen=True, kw_only=True):
    """What a wait writes once the completion has recorded its outcome (`after_record`)."""

    run: WaitRun
    wait_key: str | None = None  # WAITING: the key an event finds it by
    timeout_seconds: float | None = None  # WAITING: its timeout job's delay
    withdraw_timeout: bool = False  # resumed by something else: its timeout job goes


def wait_key_of(trigger_key: str, correlation_key: str) -> str:
    """The awaited (trigger key, correlation key) as stored in `step_execution.wait_key`."""
    return msgspec.json.encode([trigger_key, correlation_key]).decode()


async def lock_wait_key(connection: Connection, wait_key: str) -> None:
    """Take the advisory lock of an awaited key until the transaction ends (`sql.LOCK_WAIT_KEY`)."""
    await sql.LOCK_WAIT_KEY.execute(connection, lock_space=WAIT_LOCK_SPACE, wait_key=wait_key)


def timeout_job_key(execution_id: uuid.UUID, step_id: uuid.UUID, step_run: uuid.UUID) -> str:
    """A timeout job's unique key: one per run of the step (a retried step waits anew). It
    starts with the execution's step-job prefix, so cancelling or failing the execution
    withdraws it with the step jobs."""
    return f"{execution_job_prefix(execution_id)}{step_id}:timeout:{step_run}"


def timeout_job(run: WaitRun, seconds: float) -> NewJob:
    return NewJob(
        kind=WAIT_TIMEOUT_JOB_KIND,
        payload={
            "execution_id": str(run.execution.id),
            "step_key": run.step.key,
            "step_run": str(run.step_run),
        },
        max_attempts=TIMEOUT_JOB_ATTEMPTS,
        unique_key=timeout_job_key(run.execution.id, run.step_id, run.step_run),
        delay_seconds=seconds,
    )


# --- First half ----------------------------------------------------------------------------


async def start_wait(connection: Connection, wait: WaitRun) -> tuple[Outcome, WaitWrites | None]:
    """The step's outcome (an earlier event's payload, or WAITING), and for WAITING what
    `after_record` writes after the completion; see the module docstring."""
    cfg = flow_cfg(wait.step)
    assert isinstance(cfg, WaitForEventCfg)  # noqa: S101 - the step's kind decides its cfg
    try:
        correlation_key = await _correlation_key(cfg, wait.context, wait.secret_keys)
    except RenderError as error:
        return failed(f"wait_for_event: {error}"), None
    waiting_for = {"trigger_key": cfg.trigger_key, "correlation_key": correlation_key}
    shown_input = {**waiting_for, "timeout_seconds": cfg.timeout_seconds}
    wait_key = wait_key_of(cfg.trigger_key, correlation_key)
    await lock_wait_key(connection, wait_key)
    event = await sql.EARLIER_EVENT.fetchrow(
        connection,
        execution_id=wait.execution.id,
        trigger_key=cfg.trigger_key,
        correlation_key=correlation_key,
    )
    if event is not None:
        payload = msgspec.json.decode(event["payload"])
        return _resumed_with(wait.step, payload, shown_input), None
    output: dict[str, Any] = {"waiting_for": waiting_for}
    if cfg.timeout_seconds is not None:
        timeout_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=cfg.timeout_seconds)
        output["timeout_at"] = timeout_at.isoformat()
    writes = WaitWrites(run=wait, wait_key=wait_key, timeout_seconds=cfg.timeout_seconds)
    return Outcome(status=StepStatus.WAITING, output=output, input_data=shown_input), writes


async def after_record(connection: Connection, writes: WaitWrites) -> None:
    """After the completion recorded the step, in its transaction (the execution's row lock,
    then the step's row, then jobs): a WAITING step's `wait_key` and its timeout job (neither
    when the execution ended meanwhile); a resumed one's timeout job withdrawn."""
    run = writes.run
    if writes.wait_key is not None:
        waiting = await sql.SET_WAIT_KEY.fetchval(
            connection, execution_id=run.execution.id, step_key=run.step.key,
            wait_key=writes.wait_key,
        )  # fmt: skip
        if waiting is not None and writes.timeout_seconds is not None:
            await enqueue_job(connection, timeout_job(run, writes.timeout_seconds))
    if writes.withdraw_timeout:
        await delete_queued_job_by_key(
            connection, timeout_job_key(run.execution.id, run.step_id, run.step_run)
        )


async def _correlation_key(
    cfg: WaitForEventCfg, context: Mapping[str, Any], secret_keys: frozenset[str]
) -> str:
    return await render_correlation_key(
        cfg.correlation_key, context, secret_keys, where="cfg.correlation_key"
    )


async def render_correlation_key(
    template: str,
    context: Mapping[str, Any],
    secret_keys: frozenset[str] = frozenset(),
    *,
    where: str,
) -> str:
    """A rendered correlation key (a wait's, or a webhook endpoint's over its delivery): text
    (a whole number is taken as its digits), never read from a secret variable (it is stored
    and shown with the step and its events).

    Raises:
        RenderError: naming `where` and what to change.
    """
    rendered = await render_cfg_bounded({"correlation_key": template}, context, secret_keys)
    if rendered.tainted:
        raise RenderError(
            f"{where}: reads a secret variable, and a correlation key is stored and shown; "
            "correlate on an identifier that is not secret"
        )
    value = rendered.value["correlation_key"]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise RenderError(
            f"{where}: gave {type(value).__name__}; it must give text or a whole number, such "
            "as {{ trigger.order_id }}"
        )
    if not value or len(value) > MAX_CORRELATION_KEY_LENGTH:
        raise RenderError(
            f"{where}: gave {len(value)} characters; it must give 1 to {MAX_CORRELATION_KEY_LENGTH}"
        )
    return value


# --- Second half ---------------------------------------------------------------------------


def finish_wait(wait: WaitRun, resumed: dict[str, Any]) -> tuple[Outcome, WaitWrites | None]:
    """A resumed wait: the payload it was resumed with (and its timeout job withdrawn after
    the record), or its timeout (module docstring)."""
    if resumed.get(RESUMED_BY) != TIMEOUT_BRANCH:
        outcome = _resumed_with(wait.step, resumed.get("payload"), wait.first_input)
        return outcome, WaitWrites(run=wait, withdraw_timeout=True)
    return _timed_out(wait), None


def _timed_out(wait: WaitRun) -> Outcome:
    cfg = flow_cfg(wait.step)
    assert isinstance(cfg, WaitForEventCfg)  # noqa: S101 - the step's kind decides its cfg
    shown = wait.first_input if isinstance(wait.first_input, dict) else {}
    correlation = shown.get("correlation_key")
    waiting_for = {"trigger_key": cfg.trigger_key, "correlation_key": correlation}
    if TIMEOUT_BRANCH not in wait.edge_branches:
        awaited = f"an event of {cfg.trigger_key!r}" + (
            f" with correlation key {correlation!r}" if correlation is not None else ""
        )
        return failed(
            f"timed out after {cfg.timeout_seconds or 0:g} s waiting for {awaited}; add an edge with "
            "branch_key timeout to go on without it",
            wait.first_input,
        )
    return Outcome(
        status=StepStatus.SUCCESS,
        output={"timed_out": True, "waiting_for": waiting_for},
        branches=frozenset({TIMEOUT_BRANCH}),
        input_data=wait.first_input,
    )


def _resumed_with(step: Step, payload: Any, shown_input: Any) -> Outcome:
    return Outcome(
        status=StepStatus.SUCCESS,
        output=payload,
        branches=success_branches(step),
        input_data=shown_input,
    )
