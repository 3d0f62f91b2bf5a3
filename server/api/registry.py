"""`/api/v1/registry/*`: the actions, trigger sources and credential types available."""

from __future__ import annotations

from litestar import Controller, get

from server.api.pagination import Page
from server.db.registry import (
    ActionEntry,
    CredentialTypeEntry,
    TriggerEntry,
    list_actions,
    list_credential_types,
    list_triggers,
)


class RegistryController(Controller):
    path = "/registry"
    tags = ("registry",)

    @get("/actions")
    async def actions(self) -> Page[ActionEntry]:
        """Actions a step can run, with the JSON schema of their `cfg`."""
        return Page(items=await list_actions(), next_cursor=None)

    @get("/triggers")
    async def triggers(self) -> Page[TriggerEntry]:
        """Trigger sources subscriptions can name."""
        return Page(items=await list_triggers(), next_cursor=None)

    @get("/credential-types")
    async def credential_types(self) -> Page[CredentialTypeEntry]:
        """Credential types and the fields their data must have."""
        return Page(items=await list_credential_types(), next_cursor=None)
