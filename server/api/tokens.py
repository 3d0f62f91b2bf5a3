"""`/api/v1/tokens`: list, create and revoke stored API tokens.

Each token has a role (`server.access`), set when it is made and shown in every read; an
ingest token may be held to listed trigger keys. A list never shows a token nor its hash; a new token is in its create answer only (shown once).
Revoking keeps the row (with `revoked_at`) and is refused from the next request on by every
replica, since every request checks its token in the database (`server.db.tokens`). Tokens
given in API_TOKENS are not stored, so they are neither listed nor revocable here: remove them
from the setting.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from server.access import AccessRole
from server.api.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    decode_cursor,
    invalid_cursor,
    page,
)
from server.db.tokens import NewToken, TokenSummary, issue_token, list_tokens, revoke_token
from server.engine.document import TriggerKey


class TokenCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new token: a label to recognise it by, its role (admin when omitted), for an ingest
    token optionally the trigger keys it may send events to, and when it stops working."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    role: AccessRole = AccessRole.ADMIN
    trigger_keys: Annotated[list[TriggerKey], msgspec.Meta(min_length=1, max_length=100)] | None = (
        None
    )
    expires_at: (
        Annotated[dt.datetime, msgspec.Meta(tz=True, description="RFC 3339 with a UTC offset")]
        | None
    ) = None


class TokenController(Controller):
    path = "/tokens"
    opt: Mapping[str, str] = {"role": "admin"}
    tags = ("tokens",)

    @get("/")
    async def list_page(
        self, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
    ) -> Page[TokenSummary]:
        """Stored tokens, newest first, with their last use; never the token itself."""
        key = decode_cursor(cursor, 2)
        after = None
        if key is not None:
            try:
                after = (dt.datetime.fromisoformat(key[0]), uuid.UUID(key[1]))
            except ValueError:
                raise invalid_cursor() from None
        items = await list_tokens(limit=limit + 1, after=after)
        return page(items, limit, lambda item: (item.created_at, item.id))

    @post("/", status_code=HTTP_201_CREATED, opt={"role": "admin", "audit": "token.create"})
    async def create(self, data: JSONBody[TokenCreate]) -> NewToken:
        """Make a token; the answer is the only time it is shown: store it now."""
        return await issue_token(
            data.name, role=data.role, trigger_keys=data.trigger_keys, expires_at=data.expires_at
        )

    @delete(
        "/{token_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "admin", "audit": "token.revoke"},
    )
    async def revoke(self, token_id: FromPath[uuid.UUID]) -> None:
        """Revoke a token: every replica refuses it from the next request on."""
        await revoke_token(token_id)
