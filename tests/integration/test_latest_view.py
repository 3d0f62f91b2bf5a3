from __future__ import annotations

import json

from piccolo.engine.postgres import PostgresEngine

from server.db.tables import (
    WorkflowDefinition,
    WorkflowEdge,
    WorkflowStep,
    WorkflowSubscription,
    WorkflowVariable,
    WorkflowVersion,
)


async def _version(workflow: WorkflowDefinition, number: int, status: str) -> WorkflowVersion:
    version = WorkflowVersion(workflow_id=workflow.id, version_num=number, status=status)
    await version.save()
    return version


async def test_view_shows_the_latest_published_version_as_one_document(
    engine: PostgresEngine,
) -> None:
    workflow = WorkflowDefinition(name="Lead processing", category="automation", tags=["sales"])
    await workflow.save()
    await _version(workflow, 1, "published")
    latest = await _version(workflow, 2, "published")
    await _version(workflow, 3, "draft")  # drafts never show
    hot = WorkflowStep(
        version_id=latest.id, step_key="hot", kind="condition",
        cfg={"expression": "trigger.score >= 50"}, position=0,
    )  # fmt: skip
    task = WorkflowStep(
        version_id=latest.id, step_key="task", kind="action", action_key="task_management",
        cfg={"operation": "create", "title": "Call {{ trigger.name }}"}, position=1,
    )  # fmt: skip
    await hot.save()
    await task.save()
    await WorkflowEdge(
        version_id=latest.id, from_step_id=hot.id, to_step_id=task.id, branch_key="true"
    ).save()
    # Piccolo takes a str for JSONB as already-encoded JSON.
    await WorkflowVariable(
        workflow_id=workflow.id, key="owner", value=json.dumps("ops@example.com")
    ).save()
    await WorkflowVariable(
        workflow_id=workflow.id, key="api_key", secret=True, ciphertext=b"\x00sealed", key_id="k1"
    ).save()
    await WorkflowSubscription(workflow_id=workflow.id, trigger_key="lead-intake").save()

    rows = await engine.run_ddl("SELECT * FROM workflow_latest_json")

    assert len(rows) == 1
    assert rows[0]["version_num"] == 2
    assert json.loads(rows[0]["document"]) == {
        "name": "Lead processing",
        "description": "",
        "category": "automation",
        "tags": ["sales"],
        "variables": [
            {"key": "api_key", "value": None, "secret": True},
            {"key": "owner", "value": "ops@example.com", "secret": False},
        ],
        "steps": [
            {"key": "hot", "kind": "condition", "cfg": {"expression": "trigger.score >= 50"}},
            {
                "key": "task",
                "kind": "action",
                "action_key": "task_management",
                "cfg": {"operation": "create", "title": "Call {{ trigger.name }}"},
            },
        ],
        "edges": [{"from": "hot", "to": "task", "branch_key": "true"}],
        "subscriptions": [{"trigger_key": "lead-intake", "filter_conditions": {}}],
        "on_failure": None,
        "concurrency": None,
    }


async def test_workflows_without_a_published_version_are_not_in_the_view(
    engine: PostgresEngine,
) -> None:
    workflow = WorkflowDefinition(name="Draft only")
    await workflow.save()
    await _version(workflow, 1, "draft")
    assert await engine.run_ddl("SELECT * FROM workflow_latest_json") == []
