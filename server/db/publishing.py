"""Publishing: validate a draft, snapshot it to the object store, then freeze it.

The object is written before the row that points to it, so no row ever names a missing
object; the upload happens outside any transaction (no network call holds locks). A failed
upload leaves the version a draft (the caller answers 503, retryable). The freeze re-reads the
draft under its row lock and refuses if it changed while the snapshot was being written, so
the stored document is exactly the published version.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import uuid
from collections.abc import Sequence

import msgspec

from server.db.documents import (
    VariablesWriter,
    insert_document,
    load_document,
    next_version_target,
    object_key,
    write_version,
)
from server.db.pool import transaction
from server.db.registry import action_schemas, known_trigger_keys
from server.db.tables import WorkflowVersion
from server.db.versions import PUBLISHED, VersionSummary, get_version, lock_draft
from server.db.workflow_catalog import workflow_catalog
from server.engine.document import WorkflowDocument, encode_document, masked, normalized
from server.engine.validation import Problem, validate_document
from server.errors import ConflictError, ValidationError
from server.storage.object_store import ObjectStore


async def document_problems(
    document: WorkflowDocument,
    *,
    http_allowed_hosts: Sequence[str],
    workflow_id: uuid.UUID | None = None,
) -> list[Problem]:
    """Every problem of `document` (of workflow `workflow_id`; None: a new one) against the
    registries (actions, trigger keys), the other workflows it calls and the
    HTTP_ALLOWED_HOSTS setting. Validation compiles every template, work that grows with
    them: it runs off the event loop."""
    schemas, trigger_keys = await action_schemas(), await known_trigger_keys()
    catalog = await workflow_catalog(workflow_id)
    return await asyncio.to_thread(
        functools.partial(
            validate_document,
            document,
            schemas,
            trigger_keys=trigger_keys,
            http_allowed_hosts=http_allowed_hosts,
            workflows=catalog,
        )
    )


async def require_valid(
    document: WorkflowDocument,
    *,
    http_allowed_hosts: Sequence[str],
    workflow_id: uuid.UUID | None = None,
) -> None:
    """Raise a ValidationError listing every problem of `document`, if it has any."""
    problems = await document_problems(
        document, http_allowed_hosts=http_allowed_hosts, workflow_id=workflow_id
    )
    if problems:
        raise ValidationError(
            f"the workflow has {len(problems)} problem(s); fix each one listed in errors",
            [msgspec.structs.asdict(problem) for problem in problems],
        )


async def publish_version(
    workflow_id: uuid.UUID,
    version_num: int,
    *,
    store: ObjectStore,
    http_allowed_hosts: Sequence[str] = (),
) -> VersionSummary:
    """Validate, snapshot and freeze a draft; it becomes the version new executions use."""
    version = await get_version(workflow_id, version_num)
    if version.status == PUBLISHED:
        raise ConflictError(
            f"version {version_num} of workflow {workflow_id} is already published; "
            f"create a new draft with POST /api/v1/workflows/{workflow_id}/versions"
        )
    document = await load_document(version)
    await require_valid(document, http_allowed_hosts=http_allowed_hosts, workflow_id=workflow_id)
    key = object_key(workflow_id, version_num)
    await store.put(key, encode_document(masked(document)))
    async with transaction():
        locked = await lock_draft(workflow_id, version_num)
        if await load_document(locked) != document:
            raise ConflictError(
                f"version {version_num} changed while it was being published; publish it again"
            )
        await (
            WorkflowVersion.update(
                {
                    WorkflowVersion.status: PUBLISHED,
                    WorkflowVersion.s3_key: key,
                    WorkflowVersion.published_at: dt.datetime.now(dt.UTC),
                }
            )
            .where(WorkflowVersion.id == locked.id)
            .run()
        )
    return await get_version(workflow_id, version_num)


async def import_workflow(
    document: WorkflowDocument,
    *,
    publish: bool,
    store: ObjectStore,
    write_variables: VariablesWriter,
    http_allowed_hosts: Sequence[str] = (),
) -> VersionSummary:
    """Create a whole workflow from `document` in one transaction, all or nothing.

    The document is validated first (every problem at once). With `publish`, its snapshot is
    written to the object store before the transaction that creates the rows pointing to it.
    """
    document = normalized(document)
    await require_valid(document, http_allowed_hosts=http_allowed_hosts)
    workflow_id = uuid.uuid4()
    key = None
    if publish:
        key = object_key(workflow_id, 1)
        await store.put(key, encode_document(masked(document)))
    async with transaction():
        return await insert_document(
            document, workflow_id=workflow_id, write_variables=write_variables, published_key=key
        )


async def replace_document(
    workflow_id: uuid.UUID,
    document: WorkflowDocument,
    *,
    publish: bool,
    store: ObjectStore,
    write_variables: VariablesWriter,
    http_allowed_hosts: Sequence[str] = (),
) -> VersionSummary:
    """Make `document` the next version of an existing workflow, all or nothing (fixing
    forward): validated like an import; its definition fields, variables (a secret given as
    null keeps its stored value) and subscriptions replace the workflow's. The version is a
    new one after the latest, or the workflow's draft if it has one (replaced). With
    `publish`, the snapshot is written first and the version is published, so new runs and
    `retry?version=latest` use it."""
    document = normalized(document)
    await require_valid(document, http_allowed_hosts=http_allowed_hosts, workflow_id=workflow_id)
    target = await next_version_target(workflow_id)
    key = object_key(workflow_id, target) if publish else None
    if key is not None:
        await store.put(key, encode_document(masked(document)))
    async with transaction():
        if await next_version_target(workflow_id, lock=True) != target:
            raise ConflictError(
                f"workflow {workflow_id} got a new version while this one was being saved; "
                "send the document again"
            )
        return await write_version(
            workflow_id, target, document, write_variables=write_variables, published_key=key
        )
