"""n8n as the fan-out benchmark's peer, in the two shapes n8n offers for calling a workflow per item.

n8n (installed and started as in `bench/e2e_n8n.py`, PostgreSQL backend, executions saved with
their data) gets four workflows. Each parent starts from a webhook answering on receipt with
`{"leads": [...]}` in its body, and Split Out makes one item per lead:

- `n8n` (sub-workflows, n8n's own construct): Webhook -> Split Out -> Execute Workflow ("run
  once for each item", "wait for sub-workflow completion") calling a child workflow Execute
  Workflow Trigger (the item passed through) -> If score >= 50 -> Set (name, email) -> Set
  (routed, name). n8n runs these calls one after another: its Execute Workflow node awaits each
  sub-workflow before starting the next (n8n-nodes-base ExecuteWorkflow.node.js, mode `each`;
  n8n's docs: "Execute the node once for each input item in turn"), and has no setting to run
  them side by side; without waiting it starts them all at once and ends before they do,
  collecting nothing. So this shape runs one child at a time.
- `n8n-http` (n8n's way to run sub-workflows in parallel: call each through its webhook, as
  n8n's template 2536, "Pattern for Parallel Sub-Workflow Execution Followed by Wait-For-All
  Loop", does; here the child answers when it ends, so no callback is needed): Webhook -> Split
  Out -> Loop Over Items (batches of `--max-concurrency`) -> HTTP Request POSTing each item of
  the batch to a child webhook at once, back to the loop until the items run out; the child is
  Webhook (answering with its last node's item) -> If -> Set -> Set. At most one batch of
  children runs at a time, and a batch starts once the whole previous batch answered. (The
  HTTP Request node's own batching option only spaces requests out in time: it does not bound
  how many are open.)

The child executions are rows of `execution_entity` like any other (sub-workflow calls with mode
`integrated`, webhook calls with mode `webhook`); a child is counted as recorded when its saved
data holds the last Set node's run. The outputs the parent collected are read from its saved
execution data (n8n stores it with `flatted`, a JSON array whose containers refer to other
entries by index): the items of the Execute Workflow node's output, or of Loop Over Items' `done`
output.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import msgspec

from bench import n8n_workflows as nodes
from bench.e2e_common import WEBHOOK_LIVE_TIMEOUT_SECONDS, Say
from bench.e2e_n8n import N8nServer
from bench.e2e_processes import HOST
from bench.flow_common import FAN_OUT_TIMEOUT_SECONDS, FanOut, child_of

POLL_SECONDS: Final = 0.1
WEBHOOK_RETRY_SECONDS: Final = 0.5
# n8n ids are 16 letters and digits.
SUB_WORKFLOW_ID: Final = "swyBenchFlowSub1"
EACH_PARENT_ID: Final = "swyBenchFlowEach"
HOOK_CHILD_ID: Final = "swyBenchFlowHook"
BATCH_PARENT_ID: Final = "swyBenchFlowLoop"
CHILD_HOOK_PATH: Final = "flow-child"


class Shape(msgspec.Struct, frozen=True, kw_only=True):
    """One n8n fan-out: its parent's webhook and id, its child's id, and the node whose output
    (first output, last run) holds what the parent collected."""

    path: str
    parent_id: str
    child_id: str
    collector: str


SHAPES: Final = {
    "n8n": Shape(
        path="flow-each",
        parent_id=EACH_PARENT_ID,
        child_id=SUB_WORKFLOW_ID,
        collector="Execute Workflow",
    ),
    "n8n-http": Shape(
        path="flow-batches",
        parent_id=BATCH_PARENT_ID,
        child_id=HOOK_CHILD_ID,
        collector="Loop Over Items",
    ),
}

FINISHED_PARENT: Final = """
SELECT id, status,
       extract(epoch FROM "startedAt")::float8 AS started,
       extract(epoch FROM "stoppedAt")::float8 AS finished
FROM execution_entity
WHERE "workflowId" = $1 AND "createdAt" >= $2
  AND status IN ('success', 'error', 'crashed', 'canceled')
"""
CHILDREN: Final = """
SELECT e.status = 'success' AS succeeded,
       extract(epoch FROM e."startedAt")::float8 AS started,
       extract(epoch FROM e."stoppedAt")::float8 AS finished,
       coalesce(position('"Routed"' in d.data) > 0, false) AS recorded
FROM execution_entity e LEFT JOIN execution_data d ON d."executionId" = e.id
WHERE e."workflowId" = $1 AND e."createdAt" >= $2 AND e."createdAt" <= to_timestamp($3)
"""
EXECUTION_DATA: Final = 'SELECT data FROM execution_data WHERE "executionId" = $1'


def child_steps(score: str, name: str, email: str) -> list[nodes.Node]:
    """The child's work, after its trigger: If -> Set "Shape" -> Set "Routed" (our three steps)."""
    return [
        nodes.hot_lead(score),
        nodes.assign("Shape", {"name": f"={{{{ {name} }}}}", "email": f"={{{{ {email} }}}}"}),
        nodes.assign("Routed", {"routed": "hot", "name": "={{ $json.name }}"}),
    ]


CHILD_LINKS: Final = [("If", 0, "Shape"), ("Shape", 0, "Routed")]


class FlowN8n(N8nServer):
    """n8n with both fan-out shapes' workflows."""

    def __init__(
        self, *, cache: Path, pool_size: int, batch_size: int, shapes: Sequence[str], say: Say
    ) -> None:
        super().__init__(cache=cache, pool_size=pool_size, say=say)
        self.batch_size = batch_size
        self._shapes = list(shapes)

    def workflows(self) -> list[dict[str, Any]]:
        sub = nodes.workflow(
            SUB_WORKFLOW_ID,
            "Process lead",
            [
                nodes.execute_workflow_trigger(),
                *child_steps("$json.score", "$json.name", "$json.email"),
            ],
            [("Execute Workflow Trigger", 0, "If"), *CHILD_LINKS],
            number=1,
        )
        each = nodes.workflow(
            EACH_PARENT_ID,
            "Benchmark: fan-out, Execute Workflow per item",
            [
                nodes.webhook(SHAPES["n8n"].path),
                nodes.split_out("body.leads"),
                nodes.execute_workflow_each(SUB_WORKFLOW_ID),
            ],
            [("Webhook", 0, "Split Out"), ("Split Out", 0, "Execute Workflow")],
            number=2,
        )
        hook = nodes.workflow(
            HOOK_CHILD_ID,
            "Process lead (webhook)",
            [
                nodes.webhook(CHILD_HOOK_PATH, response_mode="lastNode"),
                *child_steps("$json.body.score", "$json.body.name", "$json.body.email"),
            ],
            [("Webhook", 0, "If"), *CHILD_LINKS],
            number=3,
        )
        batches = nodes.workflow(
            BATCH_PARENT_ID,
            "Benchmark: fan-out, Loop Over Items and HTTP Request",
            [
                nodes.webhook(SHAPES["n8n-http"].path),
                nodes.split_out("body.leads"),
                nodes.loop_over_items(self.batch_size),
                nodes.post_json(f"http://{HOST}:{self.port}/webhook/{CHILD_HOOK_PATH}"),
            ],
            [
                ("Webhook", 0, "Split Out"),
                ("Split Out", 0, "Loop Over Items"),
                ("Loop Over Items", 1, "HTTP Request"),
                ("HTTP Request", 0, "Loop Over Items"),
            ],
            number=4,
        )
        return [sub, each, hook, batches]

    def shapes(self) -> dict[str, int]:
        limits = {"n8n": 1, "n8n-http": self.batch_size}
        return {shape: limits[shape] for shape in self._shapes}

    async def fan_out(self, shape: str, leads: list[dict[str, Any]]) -> FanOut:
        chosen = SHAPES[shape]
        since = dt.datetime.now(dt.UTC)
        await self._start_parent(chosen.path, leads)
        parent = await self._finished_parent(chosen.parent_id, since)
        rows = await self._connection.fetch(CHILDREN, chosen.child_id, since, parent["finished"])
        return FanOut(
            parent_succeeded=parent["status"] == "success",
            started=parent["started"],
            finished=parent["finished"],
            children=[child_of(row) for row in rows],
            collected=await self._collected(parent["id"], chosen.collector),
        )

    async def _finished_parent(self, parent_id: str, since: dt.datetime) -> asyncpg.Record:
        """The parent's row once it ended (polled: n8n announces nothing to another process)."""
        async with asyncio.timeout(FAN_OUT_TIMEOUT_SECONDS):
            while True:
                row = await self._connection.fetchrow(FINISHED_PARENT, parent_id, since)
                if row is not None:
                    return row
                await asyncio.sleep(POLL_SECONDS)

    async def _start_parent(self, path: str, leads: list[dict[str, Any]]) -> None:
        """POST the leads to the parent's webhook; again while n8n, just started, has not
        registered it yet (404)."""
        deadline = time.monotonic() + WEBHOOK_LIVE_TIMEOUT_SECONDS
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{self.port}") as client:
            while True:
                answer = await client.post(f"/webhook/{path}", json={"leads": leads})
                if answer.status_code == 200:
                    return
                if answer.status_code != 404 or time.monotonic() > deadline:
                    raise RuntimeError(f"n8n {path}: {answer.status_code} {answer.text[:300]}")
                await asyncio.sleep(WEBHOOK_RETRY_SECONDS)

    async def _collected(self, execution_id: int, collector: str) -> list[str]:
        """The `name` of each item of `collector`'s first output in its last run."""
        data = await self._connection.fetchval(EXECUTION_DATA, execution_id)
        runs = unflatten(data)["resultData"]["runData"].get(collector) or [{}]
        items = ((runs[-1].get("data") or {}).get("main") or [[]])[0] or []
        return [str(item.get("json", {}).get("name")) for item in items]


def unflatten(text: str) -> Any:
    """Parse n8n's saved execution data (`flatted`): a JSON array whose first entry is the
    value; inside a list or an object, a string is the index of the entry it stands for."""
    table = json.loads(text)
    done: dict[int, Any] = {}

    def resolve(index: int) -> Any:
        if index in done:
            return done[index]
        entry = table[index]
        if isinstance(entry, list):
            items: list[Any] = []
            done[index] = items  # before its members: an entry may refer back to it
            items.extend(resolve(int(v)) if isinstance(v, str) else v for v in entry)
            return items
        if isinstance(entry, dict):
            fields: dict[str, Any] = {}
            done[index] = fields
            fields.update(
                (key, resolve(int(v)) if isinstance(v, str) else v) for key, v in entry.items()
            )
            return fields
        done[index] = entry
        return entry

    return resolve(0)
