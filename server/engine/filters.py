"""Subscription filters: whether an event's payload starts a subscribed workflow."""

from __future__ import annotations

from typing import Any

from server.engine.bounded import evaluate_bounded
from server.engine.rendering import RenderError


async def filter_refusal(filter_conditions: dict[str, Any], payload: Any) -> str | None:
    """Why a subscription's filter refuses this payload, or None when the event passes."""
    expression = filter_conditions.get("expression")
    if not expression:
        return None
    try:
        passed = await evaluate_bounded(
            expression, {"trigger": payload}, "filter_conditions.expression"
        )
    except RenderError as error:
        return f"filter failed: {error}"
    return None if passed else f"filter `{expression}` is false"
