"""Build an `ActionContext` the way the worker does, from plain values, for action tests.

Credentials are a dict of name -> (type, fields); `load_credential` returns the fields when the
type matches, as the worker's loader does, and fails like it when it does not.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from config.settings import Settings
from server.actions.base import ActionContext
from server.errors import NotFoundError
from server.queue.client import Connection

Credentials = dict[str, tuple[str, dict[str, Any]]]


def action_context(
    cfg: dict[str, Any],
    *,
    credentials: Credentials | None = None,
    allowed_hosts: tuple[str, ...] = ("127.0.0.1",),
    execution_id: uuid.UUID | None = None,
    step_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    connection: Connection | None = None,
    timeout_seconds: float = 10.0,
    attempt: int = 1,
) -> ActionContext:
    known = credentials or {}

    async def load_credential(name: str, expected_type: str) -> dict[str, Any]:
        if name not in known:
            raise NotFoundError(f"credential {name!r} not found")
        kind, fields = known[name]
        if kind != expected_type:
            raise NotFoundError(f"credential {name!r} is a {kind}, not a {expected_type}")
        return dict(fields)

    execution = execution_id or uuid.uuid4()
    step = step_id or uuid.uuid4()
    return ActionContext(
        execution_id=execution,
        workflow_id=uuid.uuid4(),
        step_id=step,
        step_key="step",
        attempt=attempt,
        idempotency_key=idempotency_key or f"{execution}:{step}",
        cfg=cfg,
        settings=Settings(http_allowed_hosts=allowed_hosts),
        load_credential=load_credential,
        timeout_seconds=timeout_seconds,
        connection=connection,
    )


class RunningStep(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: uuid.UUID
    step_id: uuid.UUID
    step_execution_id: uuid.UUID


# A published one-step workflow with an execution whose step is running: what the worker has
# written before a transactional action runs.
INSERT_RUNNING_STEP = """
WITH definition AS (
    INSERT INTO workflow_definition (name) VALUES ('actions test') RETURNING id
), version AS (
    INSERT INTO workflow_version (workflow_id, version_num, status)
    SELECT id, 1, 'published' FROM definition RETURNING id, workflow_id
), step AS (
    INSERT INTO workflow_step (version_id, step_key, kind, action_key)
    SELECT id, 'task', 'action', 'task_management' FROM version RETURNING id
), execution AS (
    INSERT INTO workflow_execution (workflow_id, version_id, status)
    SELECT workflow_id, id, 'RUNNING' FROM version RETURNING id
)
INSERT INTO step_execution (execution_id, step_id, step_key, status)
SELECT execution.id, step.id, 'task', 'RUNNING' FROM execution, step
RETURNING id AS step_execution_id, execution_id, step_id
"""


async def insert_running_step(connection: Connection) -> RunningStep:
    row = await connection.fetchrow(INSERT_RUNNING_STEP)
    assert row is not None
    return msgspec.convert(dict(row), RunningStep)
