"""Test helpers for webhooks: create endpoints through the API and sign deliveries as senders do."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from server.triggers.signatures import github_signature, standard_signature


async def create_webhook(
    client: httpx.AsyncClient,
    *,
    path: str = "orders",
    trigger_key: str = "orders",
    auth: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/webhooks",
        json={"trigger_key": trigger_key, "path": path, "auth": auth or {"type": "none"}, **fields},
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def standard_headers(
    secret: str,
    body: bytes,
    *,
    message_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers for `body`, signed now unless `timestamp` is given."""
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    sent_at = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": sent_at,
        "webhook-signature": standard_signature(secret, message_id, sent_at, body),
    }


def github_headers(secret: str, body: bytes, *, delivery: str | None = None) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "x-hub-signature-256": github_signature(secret, body),
    }
