"""Running a flow step (`call_workflow`, `foreach`, `wait_for_event`): its first half, or,
once resumed, its second (`server.runs.waits` tells the story). Called by the step runner in
the transaction that records the step; what must be written after the step's record, in that
transaction (a wait's key and timeout job: the execution's row lock comes before the step
row's), is `FlowOutcome.recorded`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from server.engine.document import Step, StepKind
from server.runs import sql
from server.runs.calls import ChildRun, finish_call, finish_foreach, start_call, start_foreach
from server.runs.event_waits import WaitRun, WaitWrites, after_record, finish_wait, start_wait
from server.runs.step_kinds import Outcome
from server.runs.store import ExecutionRow
from server.runs.waits import resumed_record
from server.statements import Connection


class FlowStepRun(msgspec.Struct, frozen=True, kw_only=True):
    execution: ExecutionRow
    step: Step
    step_id: uuid.UUID
    context: Mapping[str, Any]
    secret_keys: frozenset[str]
    edge_branches: frozenset[str]  # the branch keys of the step's outgoing edges


class FlowOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """A flow step's outcome, and what to write once the completion has recorded it."""

    outcome: Outcome
    wait_writes: WaitWrites | None = None  # a wait_for_event step's

    async def recorded(self, connection: Connection) -> None:
        """Call after the completion recorded `outcome`, in its transaction."""
        if self.wait_writes is not None:
            await after_record(connection, self.wait_writes)


async def run_flow_step(connection: Connection, flow: FlowStepRun) -> FlowOutcome:
    row = await sql.FLOW_STEP.fetchrow(
        connection, execution_id=flow.execution.id, step_key=flow.step.key
    )
    if row is None:  # cannot happen: the step runner marked it running
        raise RuntimeError(f"step {flow.step.key!r} has no record")
    resumed = resumed_record(row["result_data"])
    if flow.step.kind is StepKind.WAIT_FOR_EVENT:
        wait = WaitRun(
            execution=flow.execution,
            step=flow.step,
            step_id=flow.step_id,
            step_run=row["id"],
            first_input=None
            if row["input_data"] is None
            else msgspec.json.decode(row["input_data"]),
            context=flow.context,
            secret_keys=flow.secret_keys,
            edge_branches=flow.edge_branches,
        )
        if resumed is None:
            outcome, writes = await start_wait(connection, wait)
        else:
            outcome, writes = finish_wait(wait, resumed)
        return FlowOutcome(outcome=outcome, wait_writes=writes)
    run = ChildRun(
        execution_id=flow.execution.id,
        step=flow.step,
        step_run=row["id"],
        context=flow.context,
        secret_keys=flow.secret_keys,
    )
    if flow.step.kind is StepKind.CALL_WORKFLOW:
        outcome = await (start_call if resumed is None else finish_call)(connection, run)
    else:
        outcome = await (start_foreach if resumed is None else finish_foreach)(connection, run)
    return FlowOutcome(outcome=outcome)
