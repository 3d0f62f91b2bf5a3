"""Each workflow's versions and last run at a glance (the console's workflow list).

One statement for a page of workflows: per workflow, its latest and latest published version
numbers, and its newest execution found through `workflow_execution_workflow_time_idx` (one
index probe per workflow, whatever the number of executions).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Final

import msgspec

from server.statements import Connection

# Per workflow in $1: versions (a workflow has few) and the newest execution (LIMIT 1 down the
# (workflow_id, created_at DESC, id DESC) index). Reads only; takes no lock.
WORKFLOW_OVERVIEW: Final = """
SELECT wf.id AS workflow_id,
       (SELECT max(v.version_num) FROM workflow_version v WHERE v.workflow_id = wf.id)
           AS latest_version,
       (SELECT max(v.version_num) FROM workflow_version v
         WHERE v.workflow_id = wf.id AND v.status = 'published') AS published_version,
       last.id AS last_execution_id, last.status AS last_status, last.created_at AS last_run_at
FROM unnest($1::uuid[]) AS wf(id)
LEFT JOIN LATERAL (
    SELECT ex.id, ex.status, ex.created_at FROM workflow_execution ex
    WHERE ex.workflow_id = wf.id ORDER BY ex.created_at DESC, ex.id DESC LIMIT 1
) last ON true
"""


class WorkflowOverview(msgspec.Struct, frozen=True, kw_only=True):
    workflow_id: uuid.UUID
    latest_version: int | None
    published_version: int | None
    last_execution_id: uuid.UUID | None
    last_status: str | None
    last_run_at: dt.datetime | None


async def workflow_overview(
    connection: Connection, workflow_ids: list[uuid.UUID]
) -> dict[uuid.UUID, WorkflowOverview]:
    rows = await connection.fetch(WORKFLOW_OVERVIEW, workflow_ids)
    return {row["workflow_id"]: msgspec.convert(dict(row), WorkflowOverview) for row in rows}
