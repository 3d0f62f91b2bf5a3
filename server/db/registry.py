"""The registries: actions, trigger sources and credential types (seeded, then read)."""

from __future__ import annotations

from typing import Any

import msgspec

from server.actions.catalog import ActionSpec, CredentialTypeSpec, TriggerSpec
from server.db.tables import CredentialType, WorkflowActionRegistry, WorkflowTriggerRegistry


class ActionEntry(msgspec.Struct, frozen=True, kw_only=True):
    action_key: str
    name: str
    description: str
    cfg_schema: dict[str, object]
    credential_type: str | None


class TriggerEntry(msgspec.Struct, frozen=True, kw_only=True):
    trigger_key: str
    type: str
    description: str
    config: dict[str, object]


class CredentialTypeEntry(msgspec.Struct, frozen=True, kw_only=True):
    type_key: str
    name: str
    description: str
    fields_schema: dict[str, object]


async def seed_registries(
    actions: list[ActionSpec],
    credential_types: list[CredentialTypeSpec],
    triggers: list[TriggerSpec],
) -> None:
    """Upsert the built-in entries; run at every start-up, so it must be idempotent.

    Built-in actions and credential types are overwritten (the code defines them); built-in
    trigger sources are only inserted, since users may attach configuration to them.
    """
    for action in actions:
        await (
            WorkflowActionRegistry.insert(WorkflowActionRegistry(**msgspec.structs.asdict(action)))
            .on_conflict(
                target=WorkflowActionRegistry.action_key,
                action="DO UPDATE",
                values=[
                    WorkflowActionRegistry.name,
                    WorkflowActionRegistry.description,
                    WorkflowActionRegistry.cfg_schema,
                    WorkflowActionRegistry.credential_type,
                ],
            )
            .run()
        )
    for credential_type in credential_types:
        await (
            CredentialType.insert(CredentialType(**msgspec.structs.asdict(credential_type)))
            .on_conflict(
                target=CredentialType.type_key,
                action="DO UPDATE",
                values=[
                    CredentialType.name,
                    CredentialType.description,
                    CredentialType.fields_schema,
                ],
            )
            .run()
        )
    for trigger in triggers:
        row = WorkflowTriggerRegistry(**msgspec.structs.asdict(trigger), is_builtin=True)
        await WorkflowTriggerRegistry.insert(row).on_conflict(action="DO NOTHING").run()


async def list_actions() -> list[ActionEntry]:
    rows = await (
        WorkflowActionRegistry.select(
            WorkflowActionRegistry.action_key,
            WorkflowActionRegistry.name,
            WorkflowActionRegistry.description,
            WorkflowActionRegistry.cfg_schema,
            WorkflowActionRegistry.credential_type,
        )
        .order_by(WorkflowActionRegistry.action_key)
        .output(load_json=True)
        .run()
    )
    return [msgspec.convert(row, ActionEntry) for row in rows]


async def list_triggers() -> list[TriggerEntry]:
    rows = await (
        WorkflowTriggerRegistry.select(
            WorkflowTriggerRegistry.trigger_key,
            WorkflowTriggerRegistry.type,
            WorkflowTriggerRegistry.description,
            WorkflowTriggerRegistry.config,
        )
        .order_by(WorkflowTriggerRegistry.trigger_key)
        .output(load_json=True)
        .run()
    )
    return [msgspec.convert(row, TriggerEntry) for row in rows]


async def list_credential_types() -> list[CredentialTypeEntry]:
    rows = await (
        CredentialType.select(
            CredentialType.type_key,
            CredentialType.name,
            CredentialType.description,
            CredentialType.fields_schema,
        )
        .order_by(CredentialType.type_key)
        .output(load_json=True)
        .run()
    )
    return [msgspec.convert(row, CredentialTypeEntry) for row in rows]


async def action_schemas() -> dict[str, dict[str, Any]]:
    """Known action keys and the JSON schema of their cfg, for graph validation."""
    rows = await (
        WorkflowActionRegistry.select(
            WorkflowActionRegistry.action_key, WorkflowActionRegistry.cfg_schema
        )
        .output(load_json=True)
        .run()
    )
    return {row["action_key"]: row["cfg_schema"] for row in rows}
