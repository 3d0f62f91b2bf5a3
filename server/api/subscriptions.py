"""`/api/v1/workflows/{id}/subscriptions`: which trigger keys start the workflow."""

from __future__ import annotations

import asyncio
import uuid

from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from server.api.pagination import Page
from server.db import subscriptions
from server.db.subscriptions import SubscriptionRecord
from server.engine.document import Subscription
from server.engine.graph import filter_problem
from server.errors import ValidationError


class SubscriptionController(Controller):
    path = "/workflows/{workflow_id:uuid}/subscriptions"
    tags = ("subscriptions",)

    @get("/")
    async def list_subscriptions(
        self, workflow_id: FromPath[uuid.UUID]
    ) -> Page[SubscriptionRecord]:
        return Page(items=await subscriptions.list_subscriptions(workflow_id), next_cursor=None)

    @post("/", status_code=HTTP_201_CREATED)
    async def create_subscription(
        self, workflow_id: FromPath[uuid.UUID], data: JSONBody[Subscription]
    ) -> SubscriptionRecord:
        """Start this workflow for events of `trigger_key` that pass `filter_conditions`."""
        if problem := await asyncio.to_thread(filter_problem, data.filter_conditions):
            raise ValidationError(
                "filter_conditions is not valid",
                [{"field": "filter_conditions", "message": problem}],
            )
        return await subscriptions.create_subscription(workflow_id, data)

    @delete("/{subscription_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def delete_subscription(
        self, workflow_id: FromPath[uuid.UUID], subscription_id: FromPath[uuid.UUID]
    ) -> None:
        await subscriptions.delete_subscription(workflow_id, subscription_id)
