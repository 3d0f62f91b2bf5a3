"""`/api/v1/credentials`: create, list, show and delete credentials; their data is write-only.

A credential is created with its data, which is validated against the type's fields and sealed
at rest (`server.db.credentials`); no answer ever includes it. Credentials are listed by name
(keyset on the unique name).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from server.api.deps import Injected
from server.api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from server.crypto.aead import Keyring
from server.db.credentials import (
    CredentialSummary,
    create_credential,
    delete_credential,
    get_credential,
    list_credentials,
)

CredentialName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=r"^\S(?:[^\x00-\x1f\x7f]*\S)?$",
        description="unique; steps refer to the credential by it",
    ),
]


class CredentialCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new credential; `data` must fit the type's `fields_schema`."""

    name: CredentialName
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    data: dict[str, object]

    def __repr__(self) -> str:
        # The data is secret: keep it out of reprs, tracebacks and logs.
        return f"CredentialCreate(name={self.name!r}, type={self.type!r}, data=<redacted>)"


class CredentialController(Controller):
    path = "/credentials"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("credentials",)

    @get("/")
    async def list_page(
        self, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
    ) -> Page[CredentialSummary]:
        """Credentials by name; data is never shown."""
        key = decode_cursor(cursor, 1)
        items = await list_credentials(limit=limit + 1, after_name=key[0] if key else None)
        return page(items, limit, lambda item: (item.name,))

    @post("/", status_code=HTTP_201_CREATED, opt={"role": "admin", "audit": "credential.create"})
    async def create(
        self, data: JSONBody[CredentialCreate], keyring: Injected[Keyring]
    ) -> CredentialSummary:
        """Store a credential; its data is validated, encrypted, and never returned."""
        return await create_credential(
            name=data.name, type_key=data.type, data=data.data, keyring=keyring
        )

    @get("/{credential_id:uuid}")
    async def show(self, credential_id: FromPath[uuid.UUID]) -> CredentialSummary:
        """One credential, without its data."""
        return await get_credential(credential_id)

    @delete(
        "/{credential_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "admin", "audit": "credential.delete"},
    )
    async def remove(self, credential_id: FromPath[uuid.UUID]) -> None:
        """Delete a credential; steps naming it fail from then on."""
        await delete_credential(credential_id)
