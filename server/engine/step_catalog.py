"""What each step kind does, the branches its edges may take and the shape of its `cfg`: the
registry's `GET /api/v1/registry/step-kinds` (actions' own cfg schemas are in the action
registry). Pure; the flow kinds' schemas come from their structs (`server.engine.flow_steps`),
so the catalogue cannot drift from what publishing checks."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from server.engine.document import StepKind
from server.engine.flow_steps import CallWorkflowCfg, ForeachCfg, WaitForEventCfg


class StepKindEntry(msgspec.Struct, frozen=True, kw_only=True):
    kind: StepKind
    description: str
    branches: list[str]
    """Branch keys an edge leaving a step of this kind may carry."""
    cfg_schema: dict[str, Any]
    """JSON schema of `cfg` (an action's is its action's schema, in /registry/actions)."""


def _schema(struct: type) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(struct)
    return schema


STEP_KINDS: Final = [
    StepKindEntry(
        kind=StepKind.ACTION,
        description="Runs an action of the registry (`action_key`) with its rendered cfg; "
        "retried by `cfg.retry`.",
        branches=["default", "error"],
        cfg_schema={"description": "the action's schema: GET /api/v1/registry/actions"},
    ),
    StepKindEntry(
        kind=StepKind.CONDITION,
        description="Evaluates an expression (true/false branches) or a switch of named cases.",
        branches=["true", "false", "default", "error", "<case branch names>"],
        cfg_schema={
            "oneOf": [
                {
                    "type": "object",
                    "required": ["expression"],
                    "properties": {"expression": {"type": "string"}},
                },
                {
                    "type": "object",
                    "required": ["cases"],
                    "properties": {
                        "cases": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["branch", "expression"],
                                "properties": {
                                    "branch": {"type": "string"},
                                    "expression": {"type": "string"},
                                },
                            },
                        }
                    },
                },
            ]
        },
    ),
    StepKindEntry(
        kind=StepKind.DELAY,
        description="Waits durably (no worker sleeps) for `seconds`, or until a time.",
        branches=["default"],
        cfg_schema={
            "oneOf": [
                {
                    "type": "object",
                    "required": ["seconds"],
                    "properties": {"seconds": {"type": "number", "exclusiveMinimum": 0}},
                },
                {
                    "type": "object",
                    "required": ["until"],
                    "properties": {"until": {"type": "string"}},
                },
            ]
        },
    ),
    StepKindEntry(
        kind=StepKind.CALL_WORKFLOW,
        description="Starts one child execution of another workflow with `input` as its "
        "trigger; with `wait` (default) the step waits for it and outputs {execution_id, "
        "status, output}; a failed or cancelled child fails the step.",
        branches=["default", "error"],
        cfg_schema=_schema(CallWorkflowCfg),
    ),
    StepKindEntry(
        kind=StepKind.FOREACH,
        description="Starts one child execution per item (`item` and `index` in `input`), at "
        "most `max_concurrency` at once, up to 10,000 items; outputs {count, results (in item "
        "order), failed (indices)}.",
        branches=["default", "error"],
        cfg_schema=_schema(ForeachCfg),
    ),
    StepKindEntry(
        kind=StepKind.WAIT_FOR_EVENT,
        description="Waits durably for an event of `trigger_key` whose correlation key is the "
        "rendered `correlation_key` (one accepted since the execution started counts), for a "
        "resume by API, or for its signed resume URL (`resume_url('<step key>')`); the "
        "payload is the output. After `timeout_seconds` it takes the `timeout` branch.",
        branches=["default", "timeout", "error"],
        cfg_schema=_schema(WaitForEventCfg),
    ),
]
