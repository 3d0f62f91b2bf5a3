"""`/api/v1/workflows/{id}/subscriptions`: which trigger keys start the workflow."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping

from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from server.api.pagination import Page
from server.db import subscriptions
from server.db.registry import known_trigger_keys
from server.db.subscriptions import SubscriptionRecord
from server.engine.document import Subscription, WorkflowDocument
from server.engine.references import subscription_problems
from server.engine.validation import filter_problem
from server.errors import ValidationError


class SubscriptionController(Controller):
    path = "/workflows/{workflow_id:uuid}/subscriptions"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("subscriptions",)

    @get("/")
    async def list_subscriptions(
        self, workflow_id: FromPath[uuid.UUID]
    ) -> Page[SubscriptionRecord]:
        return Page(items=await subscriptions.list_subscriptions(workflow_id), next_cursor=None)

    @post("/", status_code=HTTP_201_CREATED, opt={"role": "editor", "audit": "subscription.create"})
    async def create_subscription(
        self, workflow_id: FromPath[uuid.UUID], data: JSONBody[Subscription]
    ) -> SubscriptionRecord:
        """Start this workflow for events of `trigger_key` that pass `filter_conditions`;
        the key must be registered (a trigger source, webhook or schedule)."""
        if problem := await asyncio.to_thread(filter_problem, data.filter_conditions):
            raise ValidationError(
                "filter_conditions is not valid",
                [{"field": "filter_conditions", "message": problem}],
            )
        document = WorkflowDocument(name="subscription", subscriptions=[data])
        for unknown in subscription_problems(document, await known_trigger_keys()):
            raise ValidationError(
                f"trigger key {data.trigger_key!r} is not registered",
                [{"field": "trigger_key", "message": unknown.message}],
            )
        return await subscriptions.create_subscription(workflow_id, data)

    @delete(
        "/{subscription_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "editor", "audit": "subscription.delete"},
    )
    async def delete_subscription(
        self, workflow_id: FromPath[uuid.UUID], subscription_id: FromPath[uuid.UUID]
    ) -> None:
        await subscriptions.delete_subscription(workflow_id, subscription_id)
