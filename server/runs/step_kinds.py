"""Running one attempt of one step, by kind, into an `Outcome` (no database writes here).

A condition evaluates its expression (or switch cases); a delay decides how long to wait; an
action renders its cfg and runs. Failures are classified: `retry` (a transient failure with
attempts left), or a final failure the engine routes to the step's `error` edges, else fails
the execution. Template and validation errors are final at once: a retry cannot fix them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec
import structlog

from server.actions.base import Action, ActionContext, Output
from server.engine.bounded import evaluate_bounded, render_cfg_bounded
from server.engine.document import Step
from server.engine.planning import StepStatus, success_branches
from server.engine.recorded_output import recordable
from server.engine.rendering import RenderError, redact, secret_strings
from server.engine.retry import backoff_seconds
from server.engine.step_policy import StepPolicy, action_cfg
from server.engine.validation import MAX_DELAY_SECONDS
from server.queue.jobs import PermanentError, RetryableError

log = structlog.get_logger(__name__)

MAX_OUTPUT_BYTES: Final = 256 * 1024
MAX_ERROR_LENGTH: Final = 2000


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What an attempt produced; values are redacted before they are stored."""

    status: StepStatus
    output: Any = None
    error: str | None = None
    branches: frozenset[str] = frozenset()
    input_data: Any = None
    wait_until: dt.datetime | None = None
    retry_delay: float | None = None  # set: retry this attempt after that many seconds
    tainted: frozenset[str] = frozenset()  # values rendered from secrets: redacted wherever found


async def run_condition(step: Step, context: Mapping[str, Any]) -> Outcome:
    try:
        chosen: str | bool | None = None
        if "cases" in step.cfg:
            for index, case in enumerate(step.cfg["cases"]):
                where = f"cfg.cases[{index}].expression"
                if await evaluate_bounded(case["expression"], context, where):
                    chosen = case["branch"]
                    break
        else:
            chosen = bool(await evaluate_bounded(step.cfg["expression"], context, "cfg.expression"))
    except RenderError as error:
        return failed(str(error))
    return Outcome(
        status=StepStatus.SUCCESS,
        output={"result": chosen if chosen is not None else "default"},
        branches=success_branches(step, chosen),
    )


async def run_delay(step: Step, context: Mapping[str, Any], now: dt.datetime) -> Outcome:
    try:
        until = await _delay_until(step, context, now)
    except (RenderError, ValueError) as error:
        return failed(f"delay: {error}")
    if until <= now:
        return Outcome(
            status=StepStatus.SUCCESS,
            output={"waited_until": until.isoformat()},
            branches=success_branches(step),
        )
    return Outcome(status=StepStatus.WAITING, output={"until": until.isoformat()}, wait_until=until)


def delay_over(step: Step, now: dt.datetime) -> Outcome:
    """The delay's wake-up job ran: the step succeeds and its successors follow."""
    return Outcome(
        status=StepStatus.SUCCESS,
        output={"waited_until": now.isoformat()},
        branches=success_branches(step),
    )


async def _delay_until(step: Step, context: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
    if "seconds" in step.cfg:
        return now + dt.timedelta(seconds=float(step.cfg["seconds"]))
    rendered = (await render_cfg_bounded({"until": step.cfg["until"]}, context)).value["until"]
    until = dt.datetime.fromisoformat(str(rendered))
    until = until if until.tzinfo else until.replace(tzinfo=dt.UTC)
    if until - now > dt.timedelta(seconds=MAX_DELAY_SECONDS):
        raise ValueError(f"{until.isoformat()} is more than {MAX_DELAY_SECONDS} s (366 days) away")
    return until


async def run_action(
    action: Action | None,
    step: Step,
    context: Mapping[str, Any],
    make_context: Callable[[dict[str, Any]], ActionContext],
    policy: StepPolicy,
    *,
    attempt: int,
    secrets: set[str],
    secret_keys: frozenset[str] = frozenset(),
) -> Outcome:
    """Render and run an action; `make_context(cfg)` builds its ActionContext. Values rendered
    from secret variables are shown as `[redacted]` and redacted from the output and error."""
    if action is None:
        return failed(f"unknown action {step.action_key!r}; it is not registered in this build")
    try:
        rendered = await render_cfg_bounded(action_cfg(step), context, secret_keys)
    except RenderError as error:
        return failed(str(error))
    tainted = frozenset(secret_strings(rendered.tainted))
    secrets = secrets | tainted
    shown_input = redact(rendered.shown, secrets)
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            output = await action.run(make_context(rendered.value))
    except TimeoutError:
        failure: Exception = RetryableError(f"timed out after {policy.timeout_seconds:g} s")
    except (RetryableError, PermanentError) as error:
        failure = error
    except Exception as error:  # noqa: BLE001 - an action bug is one failed attempt, never the worker
        log.warning("action_raised", action_key=step.action_key, error_type=type(error).__name__)
        failure = RetryableError(f"{type(error).__name__}: {error}")
    else:  # the effect happened: nothing from here on may turn into a retry that repeats it
        outcome = succeeded(step, output, shown_input)
        return msgspec.structs.replace(outcome, tainted=tainted)
    outcome = classify(failure, policy, attempt, shown_input, secrets)
    return msgspec.structs.replace(outcome, tainted=tainted)


def succeeded(step: Step, output: Output, shown_input: Any) -> Outcome:
    """A returned output, recorded as JSON data (`recordable`: converted, never raised). An
    output that is no object or is over the size limit fails the step for good (no retry)."""
    if not isinstance(output, dict):
        return failed("the action returned no output object", shown_input)
    recorded = recordable(output)
    if recorded.size > MAX_OUTPUT_BYTES:
        return failed(
            f"output is {recorded.size} bytes, over the {MAX_OUTPUT_BYTES}-byte limit",
            shown_input,
        )
    return Outcome(
        status=StepStatus.SUCCESS,
        output=recorded.data,
        branches=success_branches(step),
        input_data=shown_input,
    )


def classify(
    failure: Exception, policy: StepPolicy, attempt: int, shown_input: Any, secrets: set[str]
) -> Outcome:
    message = redact(str(failure) or type(failure).__name__, secrets)[:MAX_ERROR_LENGTH]
    if isinstance(failure, RetryableError) and attempt < policy.max_attempts:
        delay = failure.delay
        if delay is None:
            delay = backoff_seconds(attempt, policy.backoff, random.random())  # noqa: S311 - jitter
        return Outcome(
            status=StepStatus.RUNNING, error=message, input_data=shown_input, retry_delay=delay
        )
    return failed(message, shown_input)


def failed(message: str, shown_input: Any = None) -> Outcome:
    return Outcome(
        status=StepStatus.FAILED,
        error=message[:MAX_ERROR_LENGTH],
        branches=frozenset({"error"}),
        input_data=shown_input,
    )
