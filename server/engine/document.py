"""The workflow document (DESIGN §5): import/export format, object-store snapshot, view shape.

These structs are the one definition of that format; decoding a document with them already
checks types, lengths and key patterns (msgspec names the failing field). Graph rules that span
several parts (entry step, edges, cycles, schemas) live in `server.engine.validation`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MAX_STEPS = 200
MAX_EDGES = 1000
MAX_VARIABLES = 200
MAX_SUBSCRIPTIONS = 50
MAX_TAGS = 20

StepKey = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$",
        description="letters, digits, _ and -, starting with a letter or _ (max 100)",
    ),
]
VariableKey = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$",
        description="an identifier usable as vars.<key> in templates (max 100)",
    ),
]
BranchKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,100}$")]
TriggerKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")]
ActionKey = Annotated[str, Meta(min_length=1, max_length=100)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Description = Annotated[str, Meta(max_length=10_000)]
Category = Annotated[str, Meta(max_length=100)]
Tag = Annotated[str, Meta(min_length=1, max_length=50)]


class StepKind(StrEnum):
    ACTION = "action"
    CONDITION = "condition"
    DELAY = "delay"
    CALL_WORKFLOW = "call_workflow"
    FOREACH = "foreach"
    WAIT_FOR_EVENT = "wait_for_event"


# Step kinds that wait for something outside the step (a child execution, an event): they
# start it, wait as WAITING, and finish when it resumes them (`server.runs.waits`).
FLOW_KINDS = frozenset({StepKind.CALL_WORKFLOW, StepKind.FOREACH, StepKind.WAIT_FOR_EVENT})

# A workflow, by id or by name (a name must match exactly one workflow).
WorkflowRef = Annotated[
    str, Meta(min_length=1, max_length=200, description="a workflow's id, or its exact name")
]


class Step(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A step; documents leave out an empty name and a missing action_key."""

    key: StepKey
    kind: StepKind
    name: Annotated[str, Meta(max_length=200)] = ""
    action_key: ActionKey | None = None
    cfg: dict[str, Any] = msgspec.field(default_factory=dict)


class Edge(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    source: StepKey = msgspec.field(name="from")
    target: StepKey = msgspec.field(name="to")
    branch_key: BranchKey = "default"


class Variable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A variable; a secret's value is write-only: exports show it as null."""

    key: VariableKey
    value: Any = None
    secret: bool = False


class Subscription(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trigger_key: TriggerKey
    filter_conditions: dict[str, Any] = msgspec.field(default_factory=dict)


class OnFailure(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The workflow started once with a summary when an execution of this one ends FAILED."""

    workflow: WorkflowRef


class Concurrency(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """At most `limit` unfinished executions per rendered `key` (one group when absent); the
    rest wait in arrival order (`queue`) or are not started, recorded on their event (`skip`)."""

    limit: Annotated[int, Meta(ge=1, le=10_000)]
    key: Annotated[str, Meta(max_length=1000)] | None = None
    overflow: Literal["queue", "skip"] = "queue"


class WorkflowOptions(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The options a version keeps (`workflow_version.options`), as in the document."""

    on_failure: OnFailure | None = None
    concurrency: Concurrency | None = None


class WorkflowDocument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    description: Description = ""
    category: Category = ""
    tags: Annotated[list[Tag], Meta(max_length=MAX_TAGS)] = msgspec.field(default_factory=list)
    variables: Annotated[list[Variable], Meta(max_length=MAX_VARIABLES)] = msgspec.field(
        default_factory=list
    )
    steps: Annotated[list[Step], Meta(max_length=MAX_STEPS)] = msgspec.field(default_factory=list)
    edges: Annotated[list[Edge], Meta(max_length=MAX_EDGES)] = msgspec.field(default_factory=list)
    subscriptions: Annotated[list[Subscription], Meta(max_length=MAX_SUBSCRIPTIONS)] = (
        msgspec.field(default_factory=list)
    )
    on_failure: OnFailure | None = None
    concurrency: Concurrency | None = None

    @property
    def options(self) -> WorkflowOptions:
        return WorkflowOptions(on_failure=self.on_failure, concurrency=self.concurrency)


def encode_document(document: WorkflowDocument) -> bytes:
    """The canonical JSON bytes of a document (the object-store snapshot)."""
    return msgspec.json.format(msgspec.json.encode(document), indent=2)


def normalized(document: WorkflowDocument) -> WorkflowDocument:
    """The canonical order of a document's parts, so equal workflows give equal documents.

    Steps keep their order (it is meaningful to people); variables sort by key, edges by
    (from, to, branch) and subscriptions by trigger key then filter.
    """
    return msgspec.structs.replace(
        document,
        variables=sorted(document.variables, key=lambda v: v.key),
        edges=sorted(document.edges, key=lambda e: (e.source, e.target, e.branch_key)),
        subscriptions=sorted(
            document.subscriptions,
            key=lambda s: (s.trigger_key, msgspec.json.encode(s.filter_conditions, order="sorted")),
        ),
    )


def masked(document: WorkflowDocument) -> WorkflowDocument:
    """The document with every secret variable's value removed (exports, snapshots)."""
    return msgspec.structs.replace(
        document,
        variables=[
            msgspec.structs.replace(v, value=None) if v.secret else v for v in document.variables
        ],
    )
