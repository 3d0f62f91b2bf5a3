"""n8n workflow documents for the benchmarks: the nodes they use and how they connect.

n8n imports a workflow as JSON (`n8n import:workflow`): nodes (each with an id, a name, a type,
a type version and parameters) and connections between node names. The builders here give the
node versions n8n 2.8.4's editor makes, so every benchmark's n8n workflow is built the same way:
`bench/e2e_n8n.py` (Webhook -> If -> Set) and `bench/flow_n8n.py` (fan-outs to sub-workflows).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Final

Node = dict[str, Any]
# Node ids are UUIDs; the last 12 hex digits are the node's number in its workflow.
NODE_ID_PREFIX: Final = "0b6c2f9e-2f4d-4b8e-9d55-"
NODE_SPACING: Final = 220  # x distance between nodes in the editor's layout
WEBHOOK_TYPE: Final = "n8n-nodes-base.webhook"


def node_id(workflow_number: int, number: int) -> str:
    return f"{NODE_ID_PREFIX}{workflow_number:06x}{number:06x}"


def webhook(path: str, *, response_mode: str = "onReceived") -> Node:
    """POST /webhook/{path}; `onReceived` answers at once, `lastNode` with the last node's
    first item once the execution ends."""
    parameters: dict[str, Any] = {
        "httpMethod": "POST",
        "path": path,
        "responseMode": response_mode,
        "options": {},
    }
    if response_mode == "lastNode":
        parameters["responseData"] = "firstEntryJson"
    return {
        "name": "Webhook",
        "type": WEBHOOK_TYPE,
        "typeVersion": 2.1,
        "parameters": parameters,
    }


def hot_lead(score: str, *, name: str = "If") -> Node:
    """If `score` (an expression) >= 50: the true branch is output 0."""
    return {
        "name": name,
        "type": "n8n-nodes-base.if",
        "typeVersion": 2.2,
        "parameters": {
            "conditions": {
                "options": {"caseSensitive": True, "leftValue": "", "typeValidation": "strict"},
                "conditions": [
                    {
                        "id": "c1",
                        "leftValue": f"={{{{ {score} }}}}",
                        "rightValue": 50,
                        "operator": {"type": "number", "operation": "gte"},
                    }
                ],
                "combinator": "and",
            },
            "options": {},
        },
    }


def assign(name: str, values: dict[str, str]) -> Node:
    """Set: string fields (a value starting with `=` is an expression)."""
    assignments = [
        {"id": f"a{number}", "name": field, "value": value, "type": "string"}
        for number, (field, value) in enumerate(values.items(), start=1)
    ]
    return {
        "name": name,
        "type": "n8n-nodes-base.set",
        "typeVersion": 3.4,
        "parameters": {"assignments": {"assignments": assignments}, "options": {}},
    }


def split_out(field: str) -> Node:
    """One item per element of the list at `field` of the incoming item."""
    return {
        "name": "Split Out",
        "type": "n8n-nodes-base.splitOut",
        "typeVersion": 1,
        "parameters": {"fieldToSplitOut": field, "options": {}},
    }


def loop_over_items(batch_size: int) -> Node:
    """Loop Over Items: output 0 is `done` (all items), output 1 the next batch."""
    return {
        "name": "Loop Over Items",
        "type": "n8n-nodes-base.splitInBatches",
        "typeVersion": 3,
        "parameters": {"batchSize": batch_size, "options": {}},
    }


def execute_workflow_each(workflow_id: str) -> Node:
    """Execute Workflow: one sub-workflow execution per item, each awaited for its output."""
    return {
        "name": "Execute Workflow",
        "type": "n8n-nodes-base.executeWorkflow",
        "typeVersion": 1.3,
        "parameters": {
            "source": "database",
            "workflowId": {"__rl": True, "value": workflow_id, "mode": "id"},
            "mode": "each",
            "options": {"waitForSubWorkflow": True},
        },
    }


def execute_workflow_trigger() -> Node:
    """When Executed by Another Workflow, the calling item passed through as is."""
    return {
        "name": "Execute Workflow Trigger",
        "type": "n8n-nodes-base.executeWorkflowTrigger",
        "typeVersion": 1.1,
        "parameters": {"inputSource": "passthrough"},
    }


def post_json(url: str) -> Node:
    """HTTP Request: POST each item as JSON to `url`; n8n sends one batch's items at once."""
    return {
        "name": "HTTP Request",
        "type": "n8n-nodes-base.httpRequest",
        "typeVersion": 4.2,
        "parameters": {
            "method": "POST",
            "url": url,
            "sendBody": True,
            "specifyBody": "json",
            "jsonBody": "={{ JSON.stringify($json) }}",
            "options": {},
        },
    }


def workflow(
    workflow_id: str,
    name: str,
    nodes: Sequence[Node],
    links: Sequence[tuple[str, int, str]],
    *,
    number: int,
) -> dict[str, Any]:
    """A workflow of `nodes` (laid out left to right) with `links` (from node, its output
    number, to node); executions saved with their data on success and on error, as ours are."""
    placed = []
    for index, node in enumerate(nodes, start=1):
        identity = node_id(number, index)
        placed.append({**node, "id": identity, "position": [index * NODE_SPACING, 0]})
        if node["type"] == WEBHOOK_TYPE:
            placed[-1]["webhookId"] = identity  # n8n keys the webhook's registration by it
    connections: dict[str, dict[str, list[list[dict[str, Any]]]]] = {}
    for source, group in itertools.groupby(sorted(links), key=lambda link: link[0]):
        outputs: list[list[dict[str, Any]]] = []
        for _, output, target in group:
            outputs.extend([] for _ in range(output + 1 - len(outputs)))
            outputs[output].append({"node": target, "type": "main", "index": 0})
        connections[source] = {"main": outputs}
    return {
        "id": workflow_id,
        "name": name,
        "active": False,
        "nodes": placed,
        "connections": connections,
        "settings": {
            "executionOrder": "v1",
            "saveDataSuccessExecution": "all",
            "saveDataErrorExecution": "all",
            "callerPolicy": "any",
        },
        "pinData": {},
    }
