"""`/api/v1/registry/*`: the actions, step kinds, trigger sources and credential types.

Trigger sources of type `event` and `database` can be registered and deleted here; a
`database` source installs (and on delete removes) a capture trigger on its table.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from config.settings import Settings
from server.api.deps import Injected, Resources
from server.api.pagination import Page
from server.api.problems import problem
from server.db import registry
from server.db.registry import ActionEntry, CredentialTypeEntry, TriggerEntry
from server.db.trigger_health import TriggerHealth, trigger_health
from server.db.webhook_registrations import TriggerRegistration, registrations_by_trigger
from server.engine.document import TriggerKey
from server.engine.step_catalog import STEP_KINDS, StepKindEntry


class TriggerCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trigger_key: TriggerKey
    type: Literal["event", "database"]
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class TriggerView(TriggerEntry, frozen=True, kw_only=True):
    health: TriggerHealth
    registrations: list[TriggerRegistration] = msgspec.field(default_factory=list)
    """Webhook sources: the registrations at their senders (DESIGN §6), stale ones too."""


class RegistryController(Controller):
    path = "/registry"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("registry",)

    @get("/actions")
    async def actions(self) -> Page[ActionEntry]:
        """Actions a step can run, with the JSON schema of their `cfg`."""
        return Page(items=await registry.list_actions(), next_cursor=None)

    @get("/step-kinds")
    async def step_kinds(self) -> Page[StepKindEntry]:
        """Step kinds a workflow may use: what each does, the branch keys its edges may
        carry and the JSON schema of its `cfg` (DESIGN §4, §5.1)."""
        return Page(items=STEP_KINDS, next_cursor=None)

    @get("/triggers")
    async def triggers(self, resources: Injected[Resources]) -> Page[TriggerView]:
        """Trigger sources subscriptions can name, each with its intake health (and, for
        webhooks, their registrations at the senders)."""
        return Page(items=await triggers_with_health(resources), next_cursor=None)

    @post(
        "/triggers",
        status_code=HTTP_201_CREATED,
        opt={"role": "editor", "audit": "trigger.register"},
    )
    async def register_trigger(
        self, data: JSONBody[TriggerCreate], settings: Injected[Settings]
    ) -> TriggerEntry:
        """Register an `event` source (`{"trigger_key", "type": "event"}`) or a `database`
        source (`{"trigger_key", "type": "database", "config": {"table", "operations",
        "columns"?}}`), which installs a capture trigger on that table."""
        if data.type == "event" and data.config:
            raise problem(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                "event sources take no config; remove it",
                extra={"errors": [{"field": "config", "message": "must be empty for events"}]},
            )
        return await registry.register_trigger(
            trigger_key=data.trigger_key,
            type=data.type,
            description=data.description,
            config=data.config,
            allowed_tables=settings.database_trigger_tables,
        )

    @delete(
        "/triggers/{trigger_key:str}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "editor", "audit": "trigger.unregister"},
    )
    async def unregister_trigger(self, trigger_key: FromPath[str]) -> None:
        """Delete a registered source that no active subscription uses."""
        await registry.unregister_trigger(trigger_key)

    @get("/credential-types")
    async def credential_types(self) -> Page[CredentialTypeEntry]:
        """Credential types and the fields their data must have."""
        return Page(items=await registry.list_credential_types(), next_cursor=None)


async def triggers_with_health(resources: Resources) -> list[TriggerView]:
    """Every trigger source with its intake health and, for webhook sources, their
    registrations at the senders (the API's list and the console's page)."""
    # This process's counts not yet flushed are written first: a client reads its writes.
    await resources.recorder.flush()
    entries = await registry.list_triggers()
    async with resources.pool.acquire() as connection:
        health = await trigger_health(connection, [e.trigger_key for e in entries])
    registrations = await registrations_by_trigger(
        [e.trigger_key for e in entries if e.type == "webhook"]
    )
    return [
        TriggerView(
            **msgspec.structs.asdict(entry),
            health=health.get(entry.trigger_key, TriggerHealth()),
            registrations=registrations.get(entry.trigger_key, []),
        )
        for entry in entries
    ]
