"""A validation problem: where in a workflow document, and what to do about it."""

from __future__ import annotations

import msgspec


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One reason a document cannot be saved or published."""

    field: str
    message: str
