"""Workflow documents (DESIGN §5) to and from the tables.

`load_document` assembles one version as the document users export and the object store
keeps (secret variable values are never in it: they read as null). `insert_document` writes a
whole imported workflow — definition, first version, steps, edges, variables, subscriptions —
and must run inside one transaction, so an import is all or nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable

from server.db.subscriptions import insert_subscriptions, list_subscriptions
from server.db.tables import WorkflowVariable, WorkflowVersion
from server.db.versions import VersionSummary, get_version, insert_graph, version_detail
from server.db.workflows import create_workflow, get_workflow
from server.engine.document import Subscription, Variable, WorkflowDocument, normalized

VariablesWriter = Callable[[uuid.UUID, list[Variable]], Awaitable[None]]


def object_key(workflow_id: uuid.UUID, version_num: int) -> str:
    """Where a published version's document lives in the object store."""
    return f"workflows/{workflow_id}/v{version_num}.json"


async def load_document(version: VersionSummary) -> WorkflowDocument:
    definition = await get_workflow(version.workflow_id)
    detail = await version_detail(version)
    variables = await (
        WorkflowVariable.select(
            WorkflowVariable.key, WorkflowVariable.value, WorkflowVariable.secret
        )
        .where(WorkflowVariable.workflow_id == version.workflow_id)
        .order_by(WorkflowVariable.key)
        .output(load_json=True)
        .run()
    )
    subscriptions = await list_subscriptions(version.workflow_id)
    return normalized(
        WorkflowDocument(
            name=definition.name,
            description=definition.description,
            category=definition.category,
            tags=definition.tags,
            variables=[
                Variable(
                    key=row["key"],
                    value=None if row["secret"] else row["value"],
                    secret=row["secret"],
                )
                for row in variables
            ],
            steps=[step.as_step() for step in detail.steps],
            edges=[edge.as_edge() for edge in detail.edges],
            subscriptions=[
                Subscription(trigger_key=s.trigger_key, filter_conditions=s.filter_conditions)
                for s in subscriptions
                if s.is_active
            ],
        )
    )


async def insert_document(
    document: WorkflowDocument,
    *,
    workflow_id: uuid.UUID,
    write_variables: VariablesWriter,
    published_key: str | None,
) -> VersionSummary:
    """Create the workflow and its version 1 (published at `published_key` if given).

    Call inside a transaction. `write_variables` stores the variables (secrets encrypted).
    """
    await create_workflow(
        workflow_id=workflow_id,
        name=document.name,
        description=document.description,
        category=document.category,
        tags=document.tags,
    )
    version = WorkflowVersion(
        workflow_id=workflow_id,
        version_num=1,
        status="published" if published_key else "draft",
        s3_key=published_key,
        published_at=dt.datetime.now(dt.UTC) if published_key else None,
    )
    await version.save()
    await insert_graph(version.id, document.steps, document.edges)
    await write_variables(workflow_id, document.variables)
    await insert_subscriptions(workflow_id, document.subscriptions)
    return await get_version(workflow_id, 1)
