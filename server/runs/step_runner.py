"""The `workflow_step` job handler: the steps of one execution, run durably, one after another.

A job starts at one step: one statement marks it running and reads its inputs (the execution,
earlier outputs, the variables). The step runs outside any transaction (transactional actions
excepted), then ONE transaction, fenced by the job's lease, locks the execution row, records
the step's result (redacted) and what the engine planned next (`server.engine.planning`: the
steps to run or skip, and the execution's status). Of the steps it makes runnable, the first is handed to this same job
(`JobContext.continue_with`: the step is recorded RUNNING and the job row points at it in that
transaction), so a chain of steps runs without a queue round trip per step; the others get
jobs of their own. When nothing is left for this job, the same transaction completes it. A
committed step therefore always has its successors (in this job or queued), and a rolled-back
one (crash, lost lease) has none and runs again. A retryable failure with attempts left
records the error and hands the job back to the queue with the step's backoff; that statement
also appends the attempt (start, end, error, duration) to the step's `attempts_history`, and
the last attempt is the step's own row, so keeping every attempt costs no round trip and
nothing at all for a step that succeeds at once.

A job goes on only while the next step's timeout still fits in the worker's job timeout, and
for at most MAX_STEPS_PER_JOB steps, so one long execution cannot hold a worker slot forever.
A version's graph is read once and cached (the GRAPH_CACHE_SIZE most recently used versions):
published versions never change.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
import structlog

from config.settings import Settings
from server import tracing
from server.actions.base import Action
from server.crypto.aead import Keyring
from server.engine.document import FLOW_KINDS, Step, StepKind
from server.engine.planning import (
    FINISHED_EXECUTION,
    ExecutionStatus,
    Graph,
    StepState,
    StepStatus,
    plan,
)
from server.engine.rendering import redact, secret_strings
from server.engine.step_policy import JOB_TIMEOUT_MARGIN_SECONDS, StepPolicy, step_policy
from server.queue.client import enqueue_job, enqueue_jobs
from server.queue.handlers import JobContext
from server.queue.jobs import LeaseLostError, NewJob, RetryableError
from server.runs import store
from server.runs.action_contexts import ActionContexts
from server.runs.control import fail_execution
from server.runs.flow_steps import FlowStepRun, run_flow_step
from server.runs.jobs import step_job
from server.runs.metrics import EXECUTIONS_FINISHED, STEP_DURATION
from server.runs.resume_links import TEMPLATE_FUNCTION, ResumeLinks, resume_tokens
from server.runs.step_kinds import (
    Outcome,
    delay_over,
    failed,
    run_action,
    run_condition,
    run_delay,
)
from server.runs.store import ExecutionRow, PlannedStep, StepResult
from server.runs.traces import describe_step, step_span
from server.statements import Connection

log = structlog.get_logger(__name__)

MAX_STEPS_PER_EXECUTION: Final = 1000
MAX_STEPS_PER_JOB: Final = 100
# Published versions whose graphs a worker keeps in memory (they never change; a miss costs
# two reads).
GRAPH_CACHE_SIZE: Final = 512
# How long a workflow's name is reused for failure logs before it is read again.
WORKFLOW_NAME_TTL_SECONDS: Final = 60.0


class _Run(msgspec.Struct, kw_only=True):
    """What a job knows about its execution while it runs the execution's steps."""

    execution: ExecutionRow
    graph: Graph
    outputs: dict[str, Any]  # succeeded steps' outputs (redacted, as stored)
    variables: dict[str, object]
    secrets: set[str]  # plaintext secret values: never stored, logged or shown
    secret_keys: frozenset[str] = frozenset()  # the secret variables' keys
    states: dict[str, StepState] = msgspec.field(default_factory=dict)
    version: str | None = None  # the execution's version `states` are as of; None: unknown
    steps_run: int = 0  # the execution's steps_run at `version`
    steps_here: int = 0  # steps this job has run

    def template_context(self) -> dict[str, Any]:
        execution = self.execution
        return {
            "trigger": execution.context_data.get("trigger", {}),
            "steps": {key: {"output": value} for key, value in self.outputs.items()},
            "vars": self.variables,
            "execution": {
                "id": str(execution.id),
                "workflow_id": str(execution.workflow_id),
                "version_num": execution.version_num,
            },
        }


class StepRunner:
    """Callable job handler for `workflow_step` jobs."""

    def __init__(self, settings: Settings, keyring: Keyring, actions: Mapping[str, Action]) -> None:
        self._settings = settings
        self._keyring = keyring
        self._links = ResumeLinks(settings.public_url, resume_tokens(keyring))
        self._actions = actions
        self._graphs: dict[uuid.UUID, Graph] = {}
        self._workflow_names: dict[uuid.UUID, tuple[float, str]] = {}  # id -> (read at, name)

    async def __call__(self, job: JobContext) -> None:
        execution_id = uuid.UUID(job.payload["execution_id"])
        first_step = str(job.payload["step_key"])
        step_key: str | None = first_step
        resume = bool(job.payload.get("resume"))
        structlog.contextvars.bind_contextvars(execution_id=str(execution_id))
        try:
            run = await self._start(job, execution_id, first_step, resume=resume)
            while run is not None and step_key is not None:
                structlog.contextvars.bind_contextvars(step_key=step_key)
                if tracing.ENABLED:
                    step_key = await self._traced_step(job, run, step_key, resume=resume)
                else:
                    step_key = await self._run_step(job, run, step_key, resume=resume)
                resume = False
        except Exception as error:
            if not job.is_last_attempt or job.completed or step_key is None:
                raise  # the queue retries the attempt with backoff
            await self._give_up(job, execution_id, step_key, error)
        finally:
            structlog.contextvars.unbind_contextvars("execution_id", "step_key")

    async def _start(
        self, job: JobContext, execution_id: uuid.UUID, step_key: str, *, resume: bool
    ) -> _Run | None:
        """Mark the job's step running and read its inputs; None: nothing to do any more."""
        async with job.connection() as connection:
            start = None
            for _ in range(START_TRIES):  # again when the execution changed meanwhile
                start = await store.start_step(
                    connection, execution_id, step_key, job.attempt, self._keyring, resume=resume
                )
                if start is None or not start.raced:
                    break
            if start is None or start.execution.status in FINISHED_EXECUTION:
                return None  # deleted or already over: nothing left to do for this job
            if not start.marked:
                return None  # the step was cancelled or decided meanwhile
            graph = await self._graph(connection, start.execution.version_id)
        return _Run(
            execution=start.execution,
            graph=graph,
            outputs=start.outputs,
            variables=start.variables,
            secrets=secret_strings(start.variables[key] for key in start.secret_keys),
            secret_keys=start.secret_keys,
            states=start.states,
            version=None if start.raced else start.version,
            steps_run=start.execution.steps_run,
        )

    async def _give_up(
        self, job: JobContext, execution_id: uuid.UUID, step_key: str, error: Exception
    ) -> None:
        """The step's job is out of attempts: the step fails (its error edge, if any, is taken)
        rather than leave the execution hanging."""
        log.error("step_gave_up", error_type=type(error).__name__, attempts=job.attempt)
        async with job.connection() as connection:
            execution = await store.get_execution(connection, execution_id)
            graph = await self._graph(connection, execution.version_id) if execution else None
        async with job.transaction() as connection:
            if execution is None or graph is None:
                return
            run = _Run(execution=execution, graph=graph, outputs={}, variables={}, secrets=set())
            outcome = failed(f"gave up after {job.attempt} attempts: {type(error).__name__}")
            await self._complete(job, run, step_key, outcome, time.monotonic(), connection)

    async def _traced_step(
        self, job: JobContext, run: _Run, step_key: str, *, resume: bool
    ) -> str | None:
        """`_run_step` inside its span (`server.runs.traces`)."""
        step = run.graph.steps[step_key]
        with step_span(job, run.execution, step, first_here=run.steps_here == 0, resume=resume):
            return await self._run_step(job, run, step_key, resume=resume)

    async def _run_step(
        self, job: JobContext, run: _Run, step_key: str, *, resume: bool
    ) -> str | None:
        """Run one step and settle it; returns the step this job runs next, if any."""
        run.steps_here += 1
        template_context = run.template_context()
        template_context[TEMPLATE_FUNCTION] = self._links.template_function(
            run.execution.id, run.graph
        )
        step = run.graph.steps[step_key]
        started = time.monotonic()
        if step.kind is StepKind.ACTION:
            action = self._actions.get(step.action_key or "")
            if action is not None and action.transactional:
                return await self._run_in_transaction(job, run, step_key, template_context, started)
            policy = self._policy(step)
            outcome = await run_action(
                action, step, template_context,
                self._contexts(run, step_key, job.attempt, None, policy),
                policy, attempt=job.attempt, secrets=run.secrets, secret_keys=run.secret_keys,
            )  # fmt: skip
        elif step.kind in FLOW_KINDS:
            return await self._run_flow_step(job, run, step_key, template_context, started)
        elif step.kind is StepKind.CONDITION:
            outcome = await run_condition(step, template_context)
        elif resume:  # a delay's wake-up job: the wait is over
            outcome = delay_over(step, dt.datetime.now(dt.UTC))
        else:
            outcome = await run_delay(step, template_context, dt.datetime.now(dt.UTC))
        return await self._settle(job, run, step_key, outcome, started)

    async def _run_in_transaction(
        self,
        job: JobContext,
        run: _Run,
        step_key: str,
        template_context: dict[str, Any],
        started: float,
    ) -> str | None:
        """A transactional action writes inside the completion transaction, first; if it
        fails, that whole transaction rolls back (undoing the action's writes) and the failure
        is settled in a transaction of its own."""
        step = run.graph.steps[step_key]
        policy = self._policy(step)
        try:
            async with job.transaction() as connection:
                outcome = await run_action(
                    self._actions.get(step.action_key or ""), step, template_context,
                    self._contexts(run, step_key, job.attempt, connection, policy),
                    policy, attempt=job.attempt, secrets=run.secrets, secret_keys=run.secret_keys,
                )  # fmt: skip
                if outcome.status is not StepStatus.SUCCESS:
                    raise _UndoAction(outcome)
                return await self._complete(job, run, step_key, outcome, started, connection)
        except _UndoAction as undo:
            return await self._settle(job, run, step_key, undo.outcome, started)

    async def _run_flow_step(
        self,
        job: JobContext,
        run: _Run,
        step_key: str,
        template_context: dict[str, Any],
        started: float,
    ) -> str | None:
        """A flow step (`server.runs.waits`) starts what it waits for, or finishes once
        resumed, in the transaction that records it: what it starts exists exactly when its
        WAITING record does."""
        flow = FlowStepRun(
            execution=run.execution,
            step=run.graph.steps[step_key],
            step_id=uuid.UUID(run.graph.step_ids[step_key]),
            context=template_context,
            secret_keys=run.secret_keys,
            edge_branches=frozenset(edge.branch_key for edge in run.graph.outgoing[step_key]),
        )
        try:
            async with job.transaction() as connection:
                flown = await run_flow_step(connection, flow)
                if flown.outcome.status is StepStatus.FAILED:
                    raise _UndoAction(flown.outcome)  # nothing it started may stay
                next_here = await self._complete(
                    job, run, step_key, flown.outcome, started, connection
                )
                await flown.recorded(connection)
                return next_here
        except _UndoAction as undo:
            return await self._settle(job, run, step_key, undo.outcome, started)

    async def _settle(
        self, job: JobContext, run: _Run, step_key: str, outcome: Outcome, started: float
    ) -> str | None:
        if outcome.retry_delay is not None:
            outcome = redacted(outcome, run.secrets)
            if tracing.ENABLED:
                describe_step("RETRYING", outcome.error or "failed")
            elapsed = time.monotonic() - started
            async with job.connection() as connection:
                await store.record_attempt_error(
                    connection, run.execution.id, step_key, error=outcome.error or "failed",
                    attempts=job.attempt, input_data=outcome.input_data,
                    started_at=_wall_clock(elapsed), duration_ms=round(elapsed * 1000, 3),
                )  # fmt: skip
                await self._log_failure(
                    connection, "step_attempt_failed", run, step_key, outcome, job
                )
            raise RetryableError(outcome.error or "step attempt failed", delay=outcome.retry_delay)
        return await self._complete(job, run, step_key, outcome, started, None)

    async def _complete(
        self,
        job: JobContext,
        run: _Run,
        step_key: str,
        outcome: Outcome,
        started: float,
        connection: Connection | None,
    ) -> str | None:
        """Record the step's result, plan and record what follows, settle the job; in
        `connection`'s transaction if given, else on its own. Returns the step this job runs
        next (once that has committed), if any.

        The short way, when this job knows the execution's step states (`run.version`): plan
        from them and do everything in one statement (`settle_step`), which writes only if the
        execution has not changed since. Otherwise, or if it had, the long way in one
        transaction: lock the execution, record, read the states, plan, write."""
        outcome = redacted(outcome, run.secrets)
        result = StepResult(
            status=outcome.status,
            input_data=outcome.input_data,
            result_data=outcome.output,
            error=outcome.error,
            attempts=job.attempt,
            execution_time_ms=round((time.monotonic() - started) * 1000, 3),
            branches=outcome.branches if outcome.status is not StepStatus.WAITING else frozenset(),
        )
        STEP_DURATION.labels(run.graph.steps[step_key].kind.value, outcome.status.value).observe(
            time.monotonic() - started
        )
        if tracing.ENABLED:
            describe_step(outcome.status.value, outcome.error)
        if outcome.status is StepStatus.FAILED:
            async with _using(job, connection) as on:
                await self._log_failure(on, "step_failed", run, step_key, outcome, job)
        else:
            log.info("step_finished", status=outcome.status.value, attempts=job.attempt)
        if self._short_way(run, step_key, outcome):
            async with _using(job, connection) as on:
                settled = await self._settle_short(on, job, run, step_key, outcome, result)
            if settled.done:
                return settled.next_here
        async with _using(job, connection, transaction=True) as on:
            return await self._settle_long(on, job, run, step_key, outcome, result)

    def _short_way(self, run: _Run, step_key: str, outcome: Outcome) -> bool:
        """Whether planning needs nothing but what the job knows (else: the long way)."""
        failed_for_good = outcome.status is StepStatus.FAILED and not run.graph.has_error_edge(
            step_key
        )
        return (
            run.version is not None
            and not failed_for_good
            and run.steps_run + 1 <= MAX_STEPS_PER_EXECUTION
        )

    async def _settle_short(
        self,
        connection: Connection,
        job: JobContext,
        run: _Run,
        step_key: str,
        outcome: Outcome,
        result: StepResult,
    ) -> _ShortWay:
        """The short way; not done when the execution changed since `run.version`."""
        if run.version is None:
            return _ShortWay(done=False)
        states = dict(run.states)
        states[step_key] = StepState(status=result.status, branches=result.branches)
        step = self._plan(job, run, states)
        enqueue = list(step.jobs)
        if outcome.status is StepStatus.WAITING and outcome.wait_until is not None:
            enqueue.append(self._wake_up(run, step_key, outcome.wait_until))
        async with job.settling() as did_settle:
            settled = await store.settle_step(
                connection, run.execution.id, version=run.version, step_key=step_key,
                result=result, planned=step.planned, status=step.status, lease=job.lease,
                continue_as=step.continue_as, enqueue=enqueue,
            )  # fmt: skip
            if settled.done:
                did_settle(step.continue_as)
        if not settled.lease_held:
            raise LeaseLostError(job.job_id)
        if not settled.done:
            return _ShortWay(done=False)
        self._learn(run, step_key, outcome, states, step.planned, settled.version, step.status)
        return _ShortWay(done=True, next_here=step.next_here)

    async def _settle_long(
        self,
        connection: Connection,
        job: JobContext,
        run: _Run,
        step_key: str,
        outcome: Outcome,
        result: StepResult,
    ) -> str | None:
        """The long way, inside `connection`'s transaction (which settles the job)."""
        execution_id = run.execution.id
        locked = await store.lock_and_record(connection, execution_id, step_key, result)
        if locked is None or locked.status in FINISHED_EXECUTION:
            return None  # cancelled meanwhile: keep the result, start nothing new
        if outcome.status is StepStatus.WAITING and outcome.wait_until is not None:
            await enqueue_job(connection, self._wake_up(run, step_key, outcome.wait_until))
        elif outcome.status is StepStatus.FAILED and not run.graph.has_error_edge(step_key):
            await fail_execution(
                connection, execution_id, f"step {step_key!r} failed: {outcome.error}"
            )
            return None
        if locked.steps_run + 1 > MAX_STEPS_PER_EXECUTION:
            await fail_execution(
                connection, execution_id,
                f"execution ran more than {MAX_STEPS_PER_EXECUTION} steps; it was stopped",
            )  # fmt: skip
            return None
        known = [key for key in run.outputs if key != step_key]
        states, outputs = await store.step_states(connection, execution_id, known=known)
        step = self._plan(job, run, states)
        advanced = await store.advance(connection, execution_id, step.planned, step.status)
        await enqueue_jobs(connection, [new for new in step.jobs if _key(new) in advanced.inserted])
        run.outputs.update(outputs)
        run.steps_run = locked.steps_run
        self._learn(run, step_key, outcome, states, step.planned, advanced.version, step.status)
        if step.next_here is None or step.next_here not in advanced.inserted:
            return None
        if step.continue_as is not None:
            job.continue_with(step.continue_as)
        return step.next_here

    def _plan(self, job: JobContext, run: _Run, states: dict[str, StepState]) -> _NextSteps:
        """What follows, given every step's state: the steps to record (skipped, pending, or
        running here next), their jobs, the job this one continues as, the execution's status."""
        graph, execution_id = run.graph, run.execution.id
        decided = plan(graph, states)
        next_here = next((key for key in decided.run if self._fits(job, run, key)), None)

        def step_id(key: str) -> uuid.UUID:
            return uuid.UUID(graph.step_ids[key])

        planned = [
            PlannedStep(step_id=step_id(key), key=key, status=StepStatus.SKIPPED)
            for key in decided.skip
        ] + [
            PlannedStep(
                step_id=step_id(key),
                key=key,
                status=StepStatus.RUNNING if key == next_here else StepStatus.PENDING,
            )
            for key in decided.run
        ]
        return _NextSteps(
            planned=planned,
            status=decided.status,
            next_here=next_here,
            continue_as=None
            if next_here is None
            else step_job(execution_id, step_id(next_here), graph.steps[next_here]),
            jobs=[
                step_job(execution_id, step_id(key), graph.steps[key])
                for key in decided.run
                if key != next_here
            ],
        )

    def _learn(
        self,
        run: _Run,
        step_key: str,
        outcome: Outcome,
        states: dict[str, StepState],
        planned: list[PlannedStep],
        version: str | None,
        status: ExecutionStatus,
    ) -> None:
        """After a completion committed: what the job now knows of its execution."""
        if outcome.status is StepStatus.SUCCESS and outcome.output is not None:
            run.outputs[step_key] = outcome.output
        run.states = dict(states)
        run.states.update({step.key: StepState(status=step.status) for step in planned})
        run.version = version
        run.steps_run += 1
        if status is ExecutionStatus.SUCCESS:
            EXECUTIONS_FINISHED.labels(status.value, str(run.execution.workflow_id)).inc()
            log.info("execution_finished", status=status.value)

    def _wake_up(self, run: _Run, step_key: str, until: dt.datetime) -> NewJob:
        """The job that ends a delay step's wait at `until`."""
        delay = (until - dt.datetime.now(dt.UTC)).total_seconds()
        step_id = uuid.UUID(run.graph.step_ids[step_key])
        return step_job(
            run.execution.id,
            step_id,
            run.graph.steps[step_key],
            resume=True,
            delay_seconds=max(delay, 0.0),
        )

    def _fits(self, job: JobContext, run: _Run, step_key: str) -> bool:
        """Whether this job may run `step_key` next: within its step budget, and with the
        step's whole timeout (and the margin to record it) left in the worker's job timeout."""
        if run.steps_here >= MAX_STEPS_PER_JOB:
            return False
        elapsed = time.monotonic() - job.started_at
        step_timeout = self._policy(run.graph.steps[step_key]).timeout_seconds
        limit = self._settings.job_timeout_seconds - JOB_TIMEOUT_MARGIN_SECONDS
        return elapsed + step_timeout <= limit

    def _policy(self, step: Step) -> StepPolicy:
        return step_policy(step, job_timeout_seconds=self._settings.job_timeout_seconds)

    def _contexts(
        self,
        run: _Run,
        step_key: str,
        attempt: int,
        connection: Connection | None,
        policy: StepPolicy,
    ) -> ActionContexts:
        return ActionContexts(
            self._settings, self._keyring, run.execution, run.graph, step_key, attempt,
            run.secrets, connection, timeout_seconds=policy.timeout_seconds,
        )  # fmt: skip

    async def _log_failure(
        self,
        connection: Connection,
        event: str,
        run: _Run,
        step_key: str,
        outcome: Outcome,
        job: JobContext,
    ) -> None:
        """A warning naming the workflow (id and name), execution, step and the (redacted)
        error. The name is read on a failure only, and kept a minute per workflow."""
        workflow_id = run.execution.workflow_id
        now = time.monotonic()
        kept = self._workflow_names.get(workflow_id)
        if kept is None or now - kept[0] > WORKFLOW_NAME_TTL_SECONDS:
            if len(self._workflow_names) >= GRAPH_CACHE_SIZE:
                self._workflow_names.clear()
            kept = (now, await store.workflow_name(connection, workflow_id))
            self._workflow_names[workflow_id] = kept
        log.warning(
            event,
            error=outcome.error,
            workflow_id=str(workflow_id),
            workflow_name=kept[1],
            execution_id=str(run.execution.id),
            step_key=step_key,
            attempts=job.attempt,
        )

    async def _graph(self, connection: Connection, version_id: uuid.UUID) -> Graph:
        """The version's graph, from the cache of the GRAPH_CACHE_SIZE most recently used."""
        graph = self._graphs.pop(version_id, None)
        if graph is None:
            graph = await store.load_graph(connection, version_id)
            while len(self._graphs) >= GRAPH_CACHE_SIZE:
                del self._graphs[next(iter(self._graphs))]  # the least recently used
        self._graphs[version_id] = graph  # (re)inserted last: the most recently used
        return graph


START_TRIES: Final = 3


class _ShortWay(msgspec.Struct, frozen=True, kw_only=True):
    done: bool  # False: take the long way
    next_here: str | None = None


class _NextSteps(msgspec.Struct, frozen=True, kw_only=True):
    planned: list[PlannedStep]
    status: ExecutionStatus
    next_here: str | None  # the step this job runs next
    continue_as: NewJob | None  # the job this one is handed on to, for `next_here`
    jobs: list[NewJob]  # the other runnable steps' own jobs


def _key(job: NewJob) -> str:
    return str(job.payload["step_key"])


class _UndoAction(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Leaves a transactional action's transaction (rolling it back); carries the failed outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


@asynccontextmanager
async def _using(
    job: JobContext, connection: Connection | None, *, transaction: bool = False
) -> AsyncIterator[Connection]:
    """`connection` (the caller's transaction, a transactional action's) when given, else the
    job's own: a transaction that settles the job if `transaction`, else a plain connection."""
    if connection is not None:
        yield connection
    elif transaction:
        async with job.transaction() as own:
            yield own
    else:
        async with job.connection() as own:
            yield own


def _wall_clock(elapsed: float) -> dt.datetime:
    """When an attempt that has run for `elapsed` seconds (monotonic) started, in UTC."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=elapsed)


def redacted(outcome: Outcome, secrets: set[str]) -> Outcome:
    """The outcome with every secret value replaced, wherever it ended up (input, output,
    error), and every value rendered from one. One place for all of it: no path may store an
    outcome that skipped it."""
    secrets = secrets | outcome.tainted
    return msgspec.structs.replace(
        outcome,
        input_data=redact(outcome.input_data, secrets),
        output=redact(outcome.output, secrets),
        error=redact(outcome.error, secrets),
    )
