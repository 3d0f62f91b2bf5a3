"""Subscriptions (`workflow_subscription`): which trigger keys start which workflow."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import msgspec

from server.db.tables import WorkflowSubscription
from server.db.versions import require_workflow
from server.engine.document import Subscription
from server.errors import NotFoundError


class SubscriptionRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    workflow_id: uuid.UUID
    trigger_key: str
    filter_conditions: dict[str, Any]
    is_active: bool
    created_at: dt.datetime


_COLUMNS = (
    WorkflowSubscription.id,
    WorkflowSubscription.workflow_id,
    WorkflowSubscription.trigger_key,
    WorkflowSubscription.filter_conditions,
    WorkflowSubscription.is_active,
    WorkflowSubscription.created_at,
)


async def list_subscriptions(workflow_id: uuid.UUID) -> list[SubscriptionRecord]:
    await require_workflow(workflow_id)
    rows = await (
        WorkflowSubscription.select(*_COLUMNS)
        .where(WorkflowSubscription.workflow_id == workflow_id)
        .order_by(WorkflowSubscription.created_at)
        .order_by(WorkflowSubscription.id)
        .output(load_json=True)
        .run()
    )
    return [msgspec.convert(row, SubscriptionRecord) for row in rows]


async def create_subscription(
    workflow_id: uuid.UUID, subscription: Subscription
) -> SubscriptionRecord:
    await require_workflow(workflow_id)
    [created] = await insert_subscriptions(workflow_id, [subscription])
    return created


async def insert_subscriptions(
    workflow_id: uuid.UUID, subscriptions: list[Subscription]
) -> list[SubscriptionRecord]:
    """Insert subscriptions; joins the caller's transaction when there is one."""
    if not subscriptions:
        return []
    rows = [
        WorkflowSubscription(
            id=uuid.uuid4(),
            workflow_id=workflow_id,
            trigger_key=subscription.trigger_key,
            filter_conditions=json.dumps(subscription.filter_conditions),
        )
        for subscription in subscriptions
    ]
    await WorkflowSubscription.insert(*rows).run()
    ids = [row.id for row in rows]
    records = await (
        WorkflowSubscription.select(*_COLUMNS)
        .where(WorkflowSubscription.id.is_in(ids))
        .output(load_json=True)
        .run()
    )
    by_id = {record["id"]: record for record in records}
    return [msgspec.convert(by_id[i], SubscriptionRecord) for i in ids]


async def delete_subscription(workflow_id: uuid.UUID, subscription_id: uuid.UUID) -> None:
    deleted = await (
        WorkflowSubscription.delete()
        .where(
            (WorkflowSubscription.id == subscription_id)
            & (WorkflowSubscription.workflow_id == workflow_id)
        )
        .returning(WorkflowSubscription.id)
        .run()
    )
    if not deleted:
        raise NotFoundError(f"subscription {subscription_id} of workflow {workflow_id} not found")
