"""Switchyard in the fan-out benchmark: a `foreach` step over the leads, one child per lead.

`switchyard run` (api and worker roles, one process) starts as in `bench/e2e_switchyard.py` on a
fresh `bench_switchyard` database and gets two published workflows (DESIGN §5.1): the child
"Process lead", three cheap built-in steps doing no outbound I/O (condition `trigger.lead.score
>= 50` -> `transform` shaping the lead -> `set_variables`), and the parent, one `foreach` step
over `trigger.leads` with `max_concurrency` (`--max-concurrency`) and `on_item_failure: fail`,
each child's input `{"lead": item, "n": index}`. A fan-out is a manual run of the parent
(`POST /api/v1/workflows/{id}/run {"input": {"leads": [...]}}`). Read back once the parent
ended: its `workflow_execution` row, its children (rows with `parent_execution_id` = its id),
whether each child recorded its last step (`routed`), and the `foreach` step's output: the lead
name in each of its `results`, in order.
"""

from __future__ import annotations

import json
from typing import Any, Final

from bench.flow_common import FAN_OUT_TIMEOUT_SECONDS, FanOut, child_of
from bench.manual_runs import ManualRunServer

CHILD_NAME: Final = "Process lead"
PARENT_STEP: Final = "each"
POLL_SECONDS: Final = 0.05

CHILD: Final[dict[str, Any]] = {
    "name": CHILD_NAME,
    "description": "condition -> transform -> set_variables (bench/flow.py's fan-out child)",
    "steps": [
        {"key": "hot", "kind": "condition", "cfg": {"expression": "trigger.lead.score >= 50"}},
        {
            "key": "shape",
            "kind": "action",
            "action_key": "transform",
            "cfg": {
                "output": {"name": "{{ trigger.lead.name }}", "email": "{{ trigger.lead.email }}"}
            },
        },
        {
            "key": "routed",
            "kind": "action",
            "action_key": "set_variables",
            "cfg": {"values": {"routed": "hot", "name": "{{ steps.shape.output.name }}"}},
        },
    ],
    "edges": [
        {"from": "hot", "to": "shape", "branch_key": "true"},
        {"from": "shape", "to": "routed", "branch_key": "default"},
    ],
}

PARENT: Final = """
SELECT e.status = 'SUCCESS' AS succeeded,
       extract(epoch FROM e.started_at)::float8 AS started,
       extract(epoch FROM e.finished_at)::float8 AS finished,
       (SELECT s.result_data FROM step_execution s
        WHERE s.execution_id = e.id AND s.step_key = $2) AS output
FROM workflow_execution e WHERE e.id = $1
"""
CHILDREN: Final = """
SELECT e.status = 'SUCCESS' AS succeeded,
       extract(epoch FROM e.started_at)::float8 AS started,
       extract(epoch FROM e.finished_at)::float8 AS finished,
       EXISTS (SELECT 1 FROM step_execution s
               WHERE s.execution_id = e.id AND s.step_key = 'routed' AND s.status = 'SUCCESS'
                 AND s.result_data IS NOT NULL) AS recorded
FROM workflow_execution e WHERE e.parent_execution_id = $1
"""


def parent(max_concurrency: int) -> dict[str, Any]:
    """The parent workflow: one `foreach` over `trigger.leads`, failing on a failed child."""
    return {
        "name": "Benchmark: fan-out",
        "description": f"foreach over trigger.leads into {CHILD_NAME!r} (bench/flow.py)",
        "steps": [
            {
                "key": PARENT_STEP,
                "kind": "foreach",
                "cfg": {
                    "items": "{{ trigger.leads }}",
                    "workflow": CHILD_NAME,
                    "input": {"lead": "{{ item }}", "n": "{{ index }}"},
                    "max_concurrency": max_concurrency,
                    "on_item_failure": "fail",
                },
            }
        ],
        "edges": [],
    }


class FlowSwitchyard(ManualRunServer):
    """`switchyard run` with the fan-out's child and parent workflows."""

    def __init__(self, *, max_concurrency: int, worker_concurrency: int, pool_size: int) -> None:
        super().__init__(worker_concurrency=worker_concurrency, pool_size=pool_size)
        self.max_concurrency = max_concurrency
        self.parent_id = ""

    async def set_up_workflows(self) -> None:
        await self.import_workflow(CHILD)  # first: publishing the parent checks it exists
        self.parent_id = await self.import_workflow(parent(self.max_concurrency))

    def shapes(self) -> dict[str, int]:
        return {self.name: self.max_concurrency}

    async def fan_out(self, shape: str, leads: list[dict[str, Any]]) -> FanOut:
        execution_id = await self.run_workflow(self.parent_id, {"leads": leads})
        await self.wait_finished([execution_id], POLL_SECONDS, FAN_OUT_TIMEOUT_SECONDS)
        row = await self._connection.fetchrow(PARENT, execution_id, PARENT_STEP)
        if row is None:
            raise RuntimeError(f"execution {execution_id} has no row")
        children = await self._connection.fetch(CHILDREN, execution_id)
        return FanOut(
            parent_succeeded=row["succeeded"],
            started=row["started"],
            finished=row["finished"],
            children=[child_of(child) for child in children],
            collected=collected(row["output"]),
        )


def collected(output: str | None) -> list[str]:
    """The lead name in each of the `foreach` output's results (a child's output maps its
    final steps' keys to their outputs)."""
    results = json.loads(output).get("results", []) if output else []
    return [str((result or {}).get("routed", {}).get("name")) for result in results]
