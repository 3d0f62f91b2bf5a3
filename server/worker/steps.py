"""The `workflow_step` job handler: one step of one execution, run durably.

Each attempt reads the execution and the step's inputs, runs the step (outside any
transaction, except transactional actions), then in ONE transaction — which also completes
the job, fenced by its lease — locks the execution row, records the step's result (redacted),
plans what comes next (`server.engine.planning`), enqueues those steps' jobs and updates the
execution's status. A committed step therefore always has its successors, and a rolled-back
one (crash, lost lease) has none and runs again. A retryable failure with attempts left
records the error and hands the job back to the queue with the step's backoff.

A version's graph is read once per process and cached: published versions never change.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import msgspec
import structlog

from config.settings import Settings
from server.actions.base import Action
from server.crypto.aead import Keyring
from server.db import executions as runs_sql
from server.db.executions import ExecutionRow, ExecutionStatus, StepResult
from server.db.runs import fail_execution, schedule_step, step_job
from server.db.variables import resolve_variables
from server.engine.document import Step, StepKind
from server.engine.planning import ACTIVE, Graph, StepStatus, plan
from server.engine.rendering import redact, secret_strings
from server.engine.step_policy import StepPolicy, step_policy
from server.queue.client import Connection, enqueue_job
from server.queue.jobs import RetryableError
from server.worker.action_contexts import ActionContexts
from server.worker.handlers import JobContext
from server.worker.step_kinds import (
    Outcome,
    delay_over,
    failed,
    run_action,
    run_condition,
    run_delay,
)
from server.worker.step_metrics import EXECUTIONS_FINISHED, STEP_DURATION

log = structlog.get_logger(__name__)

MAX_STEPS_PER_EXECUTION: Final = 1000


class StepRunner:
    """Callable job handler for `workflow_step` jobs."""

    def __init__(self, settings: Settings, keyring: Keyring, actions: Mapping[str, Action]) -> None:
        self._settings = settings
        self._keyring = keyring
        self._actions = actions
        self._graphs: dict[uuid.UUID, Graph] = {}

    async def __call__(self, job: JobContext) -> None:
        execution_id = uuid.UUID(job.payload["execution_id"])
        step_key = str(job.payload["step_key"])
        structlog.contextvars.bind_contextvars(execution_id=str(execution_id), step_key=step_key)
        try:
            await self._run(job, execution_id, step_key, resume=bool(job.payload.get("resume")))
        except Exception as error:
            if not job.is_last_attempt or job.completed:
                raise  # the queue retries the attempt with backoff
            await self._give_up(job, execution_id, step_key, error)
        finally:
            structlog.contextvars.unbind_contextvars("execution_id", "step_key")

    async def _give_up(
        self, job: JobContext, execution_id: uuid.UUID, step_key: str, error: Exception
    ) -> None:
        """The step's job is out of attempts: the step fails (its error edge, if any, is taken)
        rather than leave the execution hanging."""
        log.error("step_gave_up", error_type=type(error).__name__, attempts=job.attempt)
        async with job.connection() as connection:
            execution = await runs_sql.get_execution(connection, execution_id)
            graph = await self._graph(connection, execution.version_id) if execution else None
        async with job.transaction() as connection:
            if execution is None or graph is None:
                return
            outcome = failed(f"gave up after {job.attempt} attempts: {type(error).__name__}")
            await self._record(
                connection,
                execution,
                graph,
                step_key,
                outcome,
                set(),
                time.monotonic(),
                job.attempt,
            )

    async def _run(
        self, job: JobContext, execution_id: uuid.UUID, step_key: str, *, resume: bool
    ) -> None:
        async with job.connection() as connection:
            execution = await runs_sql.get_execution(connection, execution_id)
            if execution is None or execution.status in runs_sql.FINISHED_EXECUTION:
                return  # deleted or already over: nothing left to do for this job
            graph = await self._graph(connection, execution.version_id)
            if not await runs_sql.mark_step_running(connection, execution, step_key, job.attempt):
                return  # the step was cancelled or decided meanwhile
            _, outputs = await runs_sql.step_states(connection, execution_id)
            variables, secret_keys = await resolve_variables(
                execution.workflow_id, self._keyring, connection=connection
            )
        secrets = secret_strings(variables[key] for key in secret_keys)
        template_context = {
            "trigger": execution.context_data.get("trigger", {}),
            "steps": {key: {"output": value} for key, value in outputs.items()},
            "vars": variables,
            "execution": {
                "id": str(execution.id),
                "workflow_id": str(execution.workflow_id),
                "version_num": execution.version_num,
            },
        }
        step = graph.steps[step_key]
        started = time.monotonic()
        if step.kind is StepKind.ACTION:
            action = self._actions.get(step.action_key or "")
            if action is not None and action.transactional:
                await self._run_in_transaction(
                    job, execution, graph, step_key, template_context, secrets, started
                )
                return
            policy = self._policy(step)
            outcome = await run_action(
                action, step, template_context,
                self._contexts(execution, graph, step_key, job.attempt, secrets, None, policy),
                policy, attempt=job.attempt, secrets=secrets,
            )  # fmt: skip
        elif step.kind is StepKind.CONDITION:
            outcome = run_condition(step, template_context)
        elif resume:  # a delay's wake-up job: the wait is over
            outcome = delay_over(step, dt.datetime.now(dt.UTC))
        else:
            outcome = run_delay(step, template_context, dt.datetime.now(dt.UTC))
        await self._settle(job, execution, graph, step_key, outcome, secrets, started)

    async def _run_in_transaction(
        self,
        job: JobContext,
        execution: ExecutionRow,
        graph: Graph,
        step_key: str,
        template_context: dict[str, Any],
        secrets: set[str],
        started: float,
    ) -> None:
        """Transactional actions write inside the completion transaction (a savepoint each)."""
        step = graph.steps[step_key]
        policy = self._policy(step)
        try:
            async with job.transaction() as connection:
                try:
                    async with connection.transaction():  # a savepoint: undoes only the action
                        outcome = await run_action(
                            self._actions.get(step.action_key or ""), step, template_context,
                            self._contexts(execution, graph, step_key, job.attempt, secrets, connection, policy),
                            policy, attempt=job.attempt, secrets=secrets,
                        )  # fmt: skip
                        if outcome.status is not StepStatus.SUCCESS:
                            raise _UndoAction(outcome)
                except _UndoAction as undo:
                    outcome = undo.outcome
                    if outcome.retry_delay is not None:
                        raise  # leave the whole transaction: this attempt will be retried
                await self._record(
                    connection, execution, graph, step_key, outcome, secrets, started, job.attempt
                )
        except _UndoAction as undo:
            await self._settle(job, execution, graph, step_key, undo.outcome, secrets, started)

    async def _settle(
        self,
        job: JobContext,
        execution: ExecutionRow,
        graph: Graph,
        step_key: str,
        outcome: Outcome,
        secrets: set[str],
        started: float,
    ) -> None:
        if outcome.retry_delay is not None:
            outcome = redacted(outcome, secrets)
            async with job.connection() as connection:
                await runs_sql.record_attempt_error(
                    connection, execution.id, step_key, error=outcome.error or "failed",
                    attempts=job.attempt, input_data=outcome.input_data,
                )  # fmt: skip
            raise RetryableError(outcome.error or "step attempt failed", delay=outcome.retry_delay)
        async with job.transaction() as connection:
            await self._record(
                connection, execution, graph, step_key, outcome, secrets, started, job.attempt
            )

    async def _record(
        self,
        connection: Connection,
        execution: ExecutionRow,
        graph: Graph,
        step_key: str,
        outcome: Outcome,
        secrets: set[str],
        started: float,
        attempt: int,
    ) -> None:
        """Inside the completion transaction: result, successors, execution status."""
        locked = await runs_sql.lock_execution(connection, execution.id)
        outcome = redacted(outcome, secrets)
        result = StepResult(
            status=outcome.status,
            input_data=outcome.input_data,
            result_data=outcome.output,
            error=outcome.error,
            attempts=attempt,
            execution_time_ms=round((time.monotonic() - started) * 1000, 3),
            branches=outcome.branches if outcome.status is not StepStatus.WAITING else frozenset(),
        )
        await runs_sql.record_step_result(connection, execution.id, step_key, result)
        STEP_DURATION.labels(graph.steps[step_key].kind.value, outcome.status.value).observe(
            time.monotonic() - started
        )
        log.info("step_finished", status=outcome.status.value, attempts=attempt)
        if locked is None or locked.status in runs_sql.FINISHED_EXECUTION:
            return  # cancelled meanwhile: keep the result, start nothing new
        if outcome.status is StepStatus.WAITING and outcome.wait_until is not None:
            delay = (outcome.wait_until - dt.datetime.now(dt.UTC)).total_seconds()
            step_id = uuid.UUID(graph.step_ids[step_key])
            await enqueue_job(
                connection,
                step_job(
                    execution.id,
                    step_id,
                    graph.steps[step_key],
                    resume=True,
                    delay_seconds=max(delay, 0.0),
                ),
            )
        elif outcome.status is StepStatus.FAILED and not graph.has_error_edge(step_key):
            await _fail(connection, execution.id, f"step {step_key!r} failed: {outcome.error}")
            return
        await self._advance(connection, locked, graph)

    async def _advance(self, connection: Connection, execution: ExecutionRow, graph: Graph) -> None:
        states, _ = await runs_sql.step_states(connection, execution.id)
        decided = plan(graph, states)
        for key in decided.skip:
            step_id = uuid.UUID(graph.step_ids[key])
            await runs_sql.insert_step(connection, execution.id, step_id, key, StepStatus.SKIPPED)
        for key in decided.run:
            await schedule_step(
                connection, execution.id, uuid.UUID(graph.step_ids[key]), graph.steps[key]
            )
        if execution.steps_run + 1 > MAX_STEPS_PER_EXECUTION:
            await _fail(
                connection, execution.id,
                f"execution ran more than {MAX_STEPS_PER_EXECUTION} steps; it was stopped",
            )  # fmt: skip
            return
        active = [state.status for state in states.values() if state.status in ACTIVE]
        if decided.done:
            status = ExecutionStatus.SUCCESS
        elif active and not decided.run and all(s is StepStatus.WAITING for s in active):
            status = ExecutionStatus.WAITING
        else:
            status = ExecutionStatus.RUNNING
        await runs_sql.set_execution_status(connection, execution.id, status, steps_run=1)
        if status == ExecutionStatus.SUCCESS:
            EXECUTIONS_FINISHED.labels(status).inc()
            log.info("execution_finished", status=status)

    def _policy(self, step: Step) -> StepPolicy:
        return step_policy(step, job_timeout_seconds=self._settings.job_timeout_seconds)

    def _contexts(
        self,
        execution: ExecutionRow,
        graph: Graph,
        step_key: str,
        attempt: int,
        secrets: set[str],
        connection: Connection | None,
        policy: StepPolicy,
    ) -> ActionContexts:
        return ActionContexts(
            self._settings, self._keyring, execution, graph, step_key, attempt, secrets,
            connection, timeout_seconds=policy.timeout_seconds,
        )  # fmt: skip

    async def _graph(self, connection: Connection, version_id: uuid.UUID) -> Graph:
        graph = self._graphs.get(version_id)
        if graph is None:
            graph = await runs_sql.load_graph(connection, version_id)
            self._graphs[version_id] = graph
        return graph


class _UndoAction(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Rolls back a transactional action's savepoint; carries the failed outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


async def _fail(connection: Connection, execution_id: uuid.UUID, error: str) -> None:
    await fail_execution(connection, execution_id, error)
    EXECUTIONS_FINISHED.labels(ExecutionStatus.FAILED).inc()


def redacted(outcome: Outcome, secrets: set[str]) -> Outcome:
    """The outcome with every secret value replaced, wherever it ended up (input, output,
    error). One place for all of it: no path may store an outcome that skipped it."""
    return msgspec.structs.replace(
        outcome,
        input_data=redact(outcome.input_data, secrets),
        output=redact(outcome.output, secrets),
        error=redact(outcome.error, secrets),
    )
