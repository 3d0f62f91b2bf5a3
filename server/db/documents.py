"""Workflow documents (DESIGN §5) to and from the tables.

`load_document` assembles one version as the document users export and the object store
keeps (secret variable values are never in it: they read as null). `insert_document` writes a
whole imported workflow — definition, first version, steps, edges, variables, subscriptions —
and must run inside one transaction, so an import is all or nothing; `write_version` does the
same for the next version of an existing workflow (fixing forward).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable

from server.db.subscriptions import insert_subscriptions, list_subscriptions
from server.db.tables import (
    WorkflowDefinition,
    WorkflowStep,
    WorkflowSubscription,
    WorkflowVariable,
    WorkflowVersion,
)
from server.db.versions import (
    DRAFT,
    VersionSummary,
    get_version,
    insert_graph,
    lock_draft,
    require_workflow,
    version_detail,
    write_options,
)
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
            on_failure=detail.options.on_failure,
            concurrency=detail.options.concurrency,
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
    await write_options(version.id, document.options)
    await write_variables(workflow_id, document.variables)
    await insert_subscriptions(workflow_id, document.subscriptions)
    return await get_version(workflow_id, 1)


async def next_version_target(workflow_id: uuid.UUID, *, lock: bool = False) -> int:
    """The version number a new document of the workflow becomes: its draft's, if it has one,
    else one after the latest. `lock` (in a transaction) serializes writers of the workflow."""
    await require_workflow(workflow_id, lock=lock)
    latest = await (
        WorkflowVersion.select(WorkflowVersion.version_num, WorkflowVersion.status)
        .where(WorkflowVersion.workflow_id == workflow_id)
        .order_by(WorkflowVersion.version_num, ascending=False)
        .first()
        .run()
    )
    if latest is None:
        return 1
    number: int = latest["version_num"]
    return number if latest["status"] == DRAFT else number + 1


async def write_version(
    workflow_id: uuid.UUID,
    version_num: int,
    document: WorkflowDocument,
    *,
    write_variables: VariablesWriter,
    published_key: str | None,
) -> VersionSummary:
    """Write `document` as version `version_num` (a new one, or the draft of that number,
    whose graph it replaces) with the definition's fields, variables and subscriptions.
    Call inside a transaction, after `next_version_target(..., lock=True)`."""
    now = dt.datetime.now(dt.UTC)
    status = "published" if published_key else DRAFT
    existing = await (
        WorkflowVersion.select(WorkflowVersion.id)
        .where(
            (WorkflowVersion.workflow_id == workflow_id)
            & (WorkflowVersion.version_num == version_num)
        )
        .first()
        .run()
    )
    if existing is None:
        version = WorkflowVersion(workflow_id=workflow_id, version_num=version_num, status=status)
        await version.save()
        version_id = version.id
    else:  # the draft: locked like every draft edit, so a concurrent publish of it waits or wins
        version_id = (await lock_draft(workflow_id, version_num)).id
        await WorkflowStep.delete().where(WorkflowStep.version_id == version_id).run()
    await (
        WorkflowVersion.update(
            {
                WorkflowVersion.status: status,
                WorkflowVersion.s3_key: published_key,
                WorkflowVersion.published_at: now if published_key else None,
            }
        )
        .where(WorkflowVersion.id == version_id)
        .run()
    )
    await insert_graph(version_id, document.steps, document.edges)
    await write_options(version_id, document.options)
    await (
        WorkflowDefinition.update(
            {
                WorkflowDefinition.name: document.name,
                WorkflowDefinition.description: document.description,
                WorkflowDefinition.category: document.category,
                WorkflowDefinition.tags: json.dumps(document.tags),
                WorkflowDefinition.updated_at: now,
            }
        )
        .where(WorkflowDefinition.id == workflow_id)
        .run()
    )
    await write_variables(workflow_id, document.variables)
    await WorkflowSubscription.delete().where(WorkflowSubscription.workflow_id == workflow_id).run()
    await insert_subscriptions(workflow_id, document.subscriptions)
    return await get_version(workflow_id, version_num)
