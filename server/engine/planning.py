"""Step planning: which steps of an execution run next, which are skipped, when it is done.

An execution is a set of step states over an acyclic graph. A step finishes with a status and
the branch keys it took: an action that succeeded takes `default`; one that failed after its
retries takes `error`; a boolean condition takes `true` or `false` and always `default`; a
switch takes its first matching case, or `default` when none matches; a delay takes `default`.
An edge is live when its source has finished and took the edge's branch. A step with no state
yet is decided once every predecessor has finished: it runs if at least one incoming edge is
live, and is skipped otherwise (a branch not taken), which in turn decides its successors.
This is a join: a step with several incoming edges runs once, after all live predecessors.

Planning is global over the graph (not only the successors of the step that just finished), so
after a retry resets part of an execution the same rules re-derive what is left to do. The plan
also decides the execution's status (SUCCESS when nothing is left, WAITING when every active
step waits and nothing is to run, else RUNNING); which steps a retry runs again is decided here
too (`failures_that_ended`, `kept_on_new_version`). Pure: callers pass the graph and the states
they read under the execution's row lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

import msgspec

from server.engine.document import Edge, Step, StepKind


class StepStatus(StrEnum):
    """Stored `step_execution.status` values."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"


FINISHED = frozenset({StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.SKIPPED})
ACTIVE = frozenset({StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING})


class ExecutionStatus(StrEnum):
    """Stored `workflow_execution.status` values."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINISHED_EXECUTION: Final = frozenset(
    {ExecutionStatus.SUCCESS, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)
# The one SQL rendering of FINISHED_EXECUTION, for `status IN {FINISHED_EXECUTION_SQL}`.
FINISHED_EXECUTION_SQL: Final = (
    "(" + ", ".join(f"'{status.value}'" for status in sorted(FINISHED_EXECUTION)) + ")"
)


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    status: StepStatus
    branches: frozenset[str] = frozenset()


class Graph(msgspec.Struct, frozen=True, kw_only=True):
    """A published version's steps and edges, indexed for planning (cached per version)."""

    steps: dict[str, Step]
    step_ids: dict[str, str]
    incoming: dict[str, list[Edge]]
    outgoing: dict[str, list[Edge]]
    entry: str

    @classmethod
    def build(cls, steps: list[Step], step_ids: Mapping[str, str], edges: list[Edge]) -> Graph:
        incoming: dict[str, list[Edge]] = {step.key: [] for step in steps}
        outgoing: dict[str, list[Edge]] = {step.key: [] for step in steps}
        for edge in edges:
            incoming[edge.target].append(edge)
            outgoing[edge.source].append(edge)
        entries = [key for key, edges_in in incoming.items() if not edges_in]
        if len(entries) != 1:
            raise ValueError(f"a published graph has exactly one entry step, found {entries}")
        return cls(
            steps={step.key: step for step in steps},
            step_ids=dict(step_ids),
            incoming=incoming,
            outgoing=outgoing,
            entry=entries[0],
        )

    def has_error_edge(self, step_key: str) -> bool:
        return any(edge.branch_key == "error" for edge in self.outgoing[step_key])


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    run: list[str]
    skip: list[str]
    done: bool
    """True when no step is active or left to decide: the execution has finished."""
    status: ExecutionStatus
    """The execution's status once this plan is recorded."""


def success_branches(step: Step, chosen: str | bool | None = None) -> frozenset[str]:
    """Branches a step takes when it succeeds; `chosen` is a condition's result or case."""
    if step.kind is not StepKind.CONDITION:
        return frozenset({"default"})
    if isinstance(chosen, bool):
        return frozenset({"true" if chosen else "false", "default"})
    return frozenset({chosen or "default"})


def plan(graph: Graph, states: Mapping[str, StepState]) -> Plan:
    """Decide every step whose predecessors have all finished."""
    decided = dict(states)
    run: list[str] = []
    skip: list[str] = []
    changed = True
    while changed:
        changed = False
        for key in graph.steps:
            if key in decided:
                continue
            verdict = _verdict(graph, decided, key)
            if verdict is None:
                continue
            changed = True
            if verdict:
                run.append(key)
                decided[key] = StepState(status=StepStatus.PENDING)
            else:
                skip.append(key)
                decided[key] = StepState(status=StepStatus.SKIPPED)
    active = [state.status for state in decided.values() if state.status in ACTIVE]
    done = not active and len(decided) == len(graph.steps)
    if done:
        status = ExecutionStatus.SUCCESS
    elif active and not run and all(s is StepStatus.WAITING for s in active):
        status = ExecutionStatus.WAITING
    else:
        status = ExecutionStatus.RUNNING
    return Plan(run=run, skip=skip, done=done, status=status)


def _verdict(graph: Graph, states: Mapping[str, StepState], key: str) -> bool | None:
    """True: run, False: skip, None: a predecessor has not finished yet."""
    edges = graph.incoming[key]
    if not edges:
        return True  # the entry step
    live = False
    for edge in edges:
        source = states.get(edge.source)
        if source is None or source.status not in FINISHED:
            return None
        live = live or edge.branch_key in source.branches
    return live


def failures_that_ended(graph: Graph, states: Mapping[str, StepState]) -> list[str]:
    """Failed steps none of whose successors was decided: the failures that stopped the run
    (what a retry runs again). A failure whose error edge was taken was handled and stays."""
    return [
        key
        for key, state in states.items()
        if state.status is StepStatus.FAILED
        and not any(edge.target in states for edge in graph.outgoing[key])
    ]


def kept_on_new_version(graph: Graph, states: Mapping[str, StepState]) -> set[str]:
    """The steps a retry on another version keeps: succeeded (or skipped) ones the new graph
    still has, all of whose predecessors in the new graph are kept too."""
    kept: set[str] = set()
    changed = True
    while changed:
        changed = False
        for key, state in states.items():
            if (
                key not in kept
                and key in graph.steps
                and state.status in (StepStatus.SUCCESS, StepStatus.SKIPPED)
                and all(edge.source in kept for edge in graph.incoming[key])
            ):
                kept.add(key)
                changed = True
    return kept
