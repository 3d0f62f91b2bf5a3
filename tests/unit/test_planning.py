"""The engine decides what runs next and the execution's status, and what a retry runs again."""

from __future__ import annotations

import itertools

from server.engine.document import Edge, Step, StepKind
from server.engine.planning import (
    ExecutionStatus,
    Graph,
    StepState,
    StepStatus,
    failures_that_ended,
    kept_on_new_version,
    plan,
)


def chain(*keys: str, error_edge_from: str | None = None) -> Graph:
    """a -> b -> c ..., optionally an error edge from one step to a `handler` step."""
    steps = [Step(key=key, kind=StepKind.ACTION, action_key="noop", cfg={}) for key in keys]
    edges = [Edge(source=a, target=b) for a, b in itertools.pairwise(keys)]
    if error_edge_from is not None:
        steps.append(Step(key="handler", kind=StepKind.ACTION, action_key="noop", cfg={}))
        edges.append(Edge(source=error_edge_from, target="handler", branch_key="error"))
    return Graph.build(steps, {step.key: step.key for step in steps}, edges)


def done(status: StepStatus = StepStatus.SUCCESS) -> StepState:
    branches = {"default"} if status is StepStatus.SUCCESS else {"error"}
    return StepState(status=status, branches=frozenset(branches))


def test_the_plan_says_running_waiting_or_success() -> None:
    graph = chain("a", "b")
    assert plan(graph, {}).status is ExecutionStatus.RUNNING  # the entry step is to run
    running = plan(graph, {"a": StepState(status=StepStatus.RUNNING)})
    assert (running.run, running.status) == ([], ExecutionStatus.RUNNING)
    waiting = plan(graph, {"a": StepState(status=StepStatus.WAITING)})
    assert (waiting.run, waiting.status) == ([], ExecutionStatus.WAITING)
    next_up = plan(graph, {"a": done()})
    assert (next_up.run, next_up.status) == (["b"], ExecutionStatus.RUNNING)
    finished = plan(graph, {"a": done(), "b": done()})
    assert (finished.done, finished.status) == (True, ExecutionStatus.SUCCESS)


def test_a_failure_whose_error_edge_ran_was_handled_and_is_not_retried() -> None:
    graph = chain("a", "b", error_edge_from="a")
    handled = {
        "a": done(StepStatus.FAILED),
        "handler": done(),
        "b": StepState(status=StepStatus.SKIPPED),
    }
    assert failures_that_ended(graph, handled) == []
    ended = {"a": done(), "b": done(StepStatus.FAILED)}
    assert failures_that_ended(graph, ended) == ["b"]


def test_a_retry_on_a_new_version_keeps_only_succeeded_steps_whose_predecessors_it_keeps() -> None:
    old_states = {"a": done(), "b": done(), "c": done(StepStatus.FAILED)}
    assert kept_on_new_version(chain("a", "b", "c"), old_states) == {"a", "b"}
    # `b` was removed and `x` added before `c`: only `a` is kept.
    assert kept_on_new_version(chain("a", "x", "c"), old_states) == {"a"}
