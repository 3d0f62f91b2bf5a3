"""Running a flow step (`call_workflow`, `foreach`, `wait_for_event`): its first half, or,
once resumed, its second (`server.runs.waits` tells the story). Called by the step runner in
the transaction that records the step."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from config.settings import Settings
from server.engine.document import Step, StepKind
from server.runs import sql
from server.runs.calls import ChildRun, finish_call, finish_foreach, start_call, start_foreach
from server.runs.event_waits import WaitRun, finish_wait, start_wait
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


async def run_flow_step(connection: Connection, settings: Settings, flow: FlowStepRun) -> Outcome:
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
            context=flow.context,
            secret_keys=flow.secret_keys,
        )
        if resumed is None:
            return await start_wait(connection, settings, wait)
        return await finish_wait(connection, wait, resumed)
    run = ChildRun(
        execution_id=flow.execution.id,
        step=flow.step,
        step_run=row["id"],
        context=flow.context,
        secret_keys=flow.secret_keys,
    )
    if flow.step.kind is StepKind.CALL_WORKFLOW:
        return await (start_call if resumed is None else finish_call)(connection, run)
    return await (start_foreach if resumed is None else finish_foreach)(connection, run)
