"""The workflows a document may refer to, for checking its references when it is published.

One read: every workflow's id and name, whether it has a published version, and which
workflows its latest published version calls (the `workflow` of its call_workflow and foreach
steps, resolved by id or unique name; an ambiguous or unknown one calls nothing). Publishing is
rare and a deployment has hundreds of workflows, not millions: reading them all is simplest.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Final

from server.db.tables import WorkflowDefinition
from server.engine.flow_steps import WorkflowCatalog

_CATALOG: Final = """
SELECT d.id::text AS id, d.name, v.id IS NOT NULL AS published,
       coalesce((SELECT array_agg(DISTINCT s.cfg->>'workflow') FROM workflow_step s
                 WHERE s.version_id = v.id AND s.kind IN ('call_workflow', 'foreach')
                   AND s.cfg->>'workflow' IS NOT NULL), ARRAY[]::text[]) AS refs
FROM workflow_definition d
LEFT JOIN LATERAL (
    SELECT id FROM workflow_version
    WHERE workflow_id = d.id AND status = 'published'
    ORDER BY version_num DESC LIMIT 1
) v ON true
"""


async def workflow_catalog(own_id: uuid.UUID | None) -> WorkflowCatalog:
    rows = await WorkflowDefinition.raw(_CATALOG).run()
    by_name: dict[str, list[str]] = defaultdict(list)
    ids = set()
    for row in rows:
        by_name[row["name"]].append(row["id"])
        ids.add(row["id"])

    def resolved(ref: str) -> str | None:
        if ref in ids:
            return ref
        named = by_name.get(ref, [])
        return named[0] if len(named) == 1 else None

    calls = {
        row["id"]: frozenset(found for ref in row["refs"] if (found := resolved(ref)) is not None)
        for row in rows
    }
    return WorkflowCatalog(
        by_name=dict(by_name),
        published=frozenset(row["id"] for row in rows if row["published"]),
        calls=calls,
        own_id=None if own_id is None else str(own_id),
    )
