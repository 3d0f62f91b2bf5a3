"""Keyset pagination: `?limit=&cursor=` in, `{"items", "next_cursor"}` out.

A cursor is an opaque, URL-safe token holding the sort key of the last item returned; the next
page starts strictly after it, so pages stay stable while rows are added (no OFFSET).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Annotated, Generic, TypeVar

import msgspec
from litestar.params import PathParameter, QueryParameter

from server.api.problems import problem

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

Limit = Annotated[
    int, QueryParameter(ge=1, le=MAX_LIMIT, description=f"page size, 1 to {MAX_LIMIT}")
]
MAX_VERSION_NUMBER = 2_147_483_647  # the column is an int4
VersionNumber = Annotated[
    int, PathParameter(ge=1, le=MAX_VERSION_NUMBER, description="a version number (1, 2, ...)")
]
VersionQuery = Annotated[
    int | None,
    QueryParameter(
        ge=1, le=MAX_VERSION_NUMBER, description="a version number; the latest if omitted"
    ),
]
Cursor = Annotated[
    str | None, QueryParameter(description="`next_cursor` of the previous page", max_length=500)
]


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    items: list[T]
    next_cursor: str | None


def encode_cursor(values: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[str] | None:
    """The sort key in `cursor`, or None for the first page; a 400 problem if malformed."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    if (
        not isinstance(values, list)
        or len(values) != size
        or not all(isinstance(v, str) for v in values)
    ):
        raise invalid_cursor()
    return values


def time_and_id(cursor: str | None) -> tuple[dt.datetime, uuid.UUID] | None:
    """The `(timestamp, id)` position a cursor from `page(...)` holds, or None for page one."""
    key = decode_cursor(cursor, 2)
    if key is None:
        return None
    try:
        return dt.datetime.fromisoformat(key[0]), uuid.UUID(key[1])
    except ValueError:
        raise invalid_cursor() from None


def page(items: list[T], limit: int, position: Callable[[T], Sequence[object]]) -> Page[T]:
    """The page for `items` fetched with `limit + 1`: the extra row only says a next page
    exists, and the cursor holds the sort key (`position`) of the last item shown."""
    if len(items) <= limit:
        return Page(items=items, next_cursor=None)
    shown = items[:limit]
    last = position(shown[-1])
    return Page(
        items=shown,
        next_cursor=encode_cursor(
            [v.isoformat() if isinstance(v, dt.datetime) else str(v) for v in last]
        ),
    )


def invalid_cursor() -> Exception:
    return problem(
        HTTPStatus.BAD_REQUEST,
        "cursor is not valid; pass the next_cursor of a previous page, or omit it",
        slug="invalid-cursor",
    )
