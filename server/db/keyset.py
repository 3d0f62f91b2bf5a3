"""Keyset pagination in Piccolo queries: rows strictly after (or before) a `(created_at, id)`.

Every list of the API pages by the creation time with the id as tie-breaker (many rows share
one `created_at` when written in one transaction); these conditions match the composite
indexes on those two columns.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

Position = tuple[dt.datetime, uuid.UUID]


def after_position(table: Any, position: Position) -> Any:
    """Rows after `position` in ascending `(created_at, id)` order."""
    created_at, last_id = position
    return (table.created_at > created_at) | (
        (table.created_at == created_at) & (table.id > last_id)
    )


def before_position(table: Any, position: Position) -> Any:
    """Rows after `position` in descending `(created_at, id)` order (newest first)."""
    created_at, last_id = position
    return (table.created_at < created_at) | (
        (table.created_at == created_at) & (table.id < last_id)
    )
