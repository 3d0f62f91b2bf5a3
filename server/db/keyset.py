"""Keyset pagination in Piccolo queries: rows strictly after (or before) a `(created_at, id)`.

Every list of the API pages by the creation time with the id as tie-breaker (many rows share
one `created_at` when written in one transaction); these conditions are row comparisons that
match the composite indexes on those two columns exactly.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from piccolo.columns.combination import WhereRaw

Position = tuple[dt.datetime, uuid.UUID]


def after_position(table: Any, position: Position) -> Any:
    """Rows after `position` in ascending `(created_at, id)` order."""
    return _row_comparison(table, ">", position)


def before_position(table: Any, position: Position) -> Any:
    """Rows after `position` in descending `(created_at, id)` order (newest first)."""
    return _row_comparison(table, "<", position)


def _row_comparison(table: Any, operator: str, position: Position) -> WhereRaw:
    """`(created_at, id) <op> (X, Y)`: a row comparison is an index condition on the
    `(created_at, id)` index, so a page deep in a list costs what the first one does (the
    `created_at < X OR (created_at = X AND id < Y)` form used the index only for order and
    filtered every row before the cursor). Table names come from code, values are parameters."""
    name = table._meta.tablename
    created_at, last_id = position
    return WhereRaw(
        f'("{name}"."created_at", "{name}"."id") {operator} ({{}}, {{}})', created_at, last_id
    )
