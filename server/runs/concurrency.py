"""Workflow concurrency limits and schedule overlap: which executions start, wait or are skipped.

(Being built: see issue 14. `admit_next` is called when an execution of a group ends.)
"""

from __future__ import annotations

import uuid

from server.statements import Connection


async def admit_next(
    connection: Connection,
    workflow_id: uuid.UUID,
    *,
    concurrency_key: str | None,
    overlap_key: str | None,
) -> None:
    """Admit the next held executions of the groups an ended execution counted in."""
    del connection, workflow_id, concurrency_key, overlap_key
