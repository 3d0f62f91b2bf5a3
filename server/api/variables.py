"""`/api/v1/workflows/{workflow_id}/variables`: a workflow's variables; secrets are write-only.

Variables belong to the workflow, not to a version, so they can change after publishing.
POST creates (201) or overwrites (200) one variable; a secret's value is never shown again
(`value` null, `has_value` true), and posting a secret with a null value keeps the stored one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from http import HTTPStatus

from litestar import Controller, Response, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from server.api.deps import Injected
from server.api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from server.crypto.aead import Keyring
from server.db.variables import (
    VariableInput,
    VariableView,
    delete_variable,
    list_variables,
    set_variable,
)


class VariableController(Controller):
    path = "/workflows/{workflow_id:uuid}/variables"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("variables",)

    @get("/")
    async def list_page(
        self, workflow_id: FromPath[uuid.UUID], limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
    ) -> Page[VariableView]:
        """The workflow's variables by key; secret values are masked."""
        key = decode_cursor(cursor, 1)
        items = await list_variables(
            workflow_id, limit=limit + 1, after_key=key[0] if key else None
        )
        return page(items, limit, lambda item: (item.key,))

    @post(
        "/",
        status_code=HTTPStatus.CREATED,
        responses={
            HTTPStatus.OK: ResponseSpec(
                data_container=VariableView, description="replaced a variable of the same key"
            )
        },
        opt={"role": "editor", "audit": "variable.write"},
    )
    async def write(
        self,
        workflow_id: FromPath[uuid.UUID],
        data: JSONBody[VariableInput],
        keyring: Injected[Keyring],
    ) -> Response[VariableView]:
        """Create or overwrite a variable; secrets are encrypted and never shown again."""
        view, created = await set_variable(workflow_id, data, keyring)
        status = HTTPStatus.CREATED if created else HTTPStatus.OK
        return Response(view, status_code=status)

    @delete(
        "/{key:str}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "editor", "audit": "variable.delete"},
    )
    async def remove(self, workflow_id: FromPath[uuid.UUID], key: FromPath[str]) -> None:
        """Delete a variable."""
        await delete_variable(workflow_id, key)
