"""The registries: actions, trigger sources and credential types (seeded, then read)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

import asyncpg
import msgspec
from piccolo.table import Table

from server.actions.catalog import ActionSpec, CredentialTypeSpec, TriggerSpec
from server.db.database_triggers import DatabaseTriggerConfig, install_trigger, remove_trigger
from server.db.pool import transaction
from server.db.tables import (
    CredentialType,
    WorkflowActionRegistry,
    WorkflowSubscription,
    WorkflowTriggerRegistry,
)
from server.errors import ConflictError, NotFoundError, ValidationError


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
    return await _entries(WorkflowActionRegistry, ActionEntry)


async def list_triggers() -> list[TriggerEntry]:
    return await _entries(WorkflowTriggerRegistry, TriggerEntry)


async def list_credential_types() -> list[CredentialTypeEntry]:
    return await _entries(CredentialType, CredentialTypeEntry)


EntryT = TypeVar("EntryT", bound=msgspec.Struct)


async def _entries(table: type[Table], entry: type[EntryT]) -> list[EntryT]:
    """Every row of a registry table as `entry` structs (whose field names are the columns,
    the first being the key), ordered by key."""
    columns = [getattr(table, name) for name in entry.__struct_fields__]
    rows = await table.select(*columns).order_by(columns[0]).output(load_json=True).run()
    return [msgspec.convert(row, entry) for row in rows]


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


KNOWN_TRIGGER_KEYS = """
SELECT trigger_key FROM workflow_trigger_registry
UNION SELECT trigger_key FROM webhook_endpoint
UNION SELECT trigger_key FROM schedule_trigger
"""


async def known_trigger_keys() -> frozenset[str]:
    """Every trigger key something can fire: registered sources, webhooks and schedules."""
    rows = await WorkflowActionRegistry.raw(KNOWN_TRIGGER_KEYS).run()
    return frozenset(row["trigger_key"] for row in rows)


async def register_trigger(
    *,
    trigger_key: str,
    type: str,
    description: str,
    config: dict[str, object],
    allowed_tables: Sequence[str] = (),
) -> TriggerEntry:
    """Add a trigger source; a key that exists already is a conflict.

    A `database` source also installs its capture trigger on the watched table, in the same
    transaction: the source exists exactly when its trigger does.
    """
    database_config = _database_config(config) if type == "database" else None
    if database_config is not None:
        config = msgspec.to_builtins(database_config)
    row = WorkflowTriggerRegistry(
        trigger_key=trigger_key,
        type=type,
        description=description,
        config=json.dumps(config),
        is_builtin=False,
    )
    try:
        async with transaction() as tx:
            await WorkflowTriggerRegistry.insert(row).run()
            if database_config is not None:
                await install_trigger(tx.connection, trigger_key, database_config, allowed_tables)
    except asyncpg.UniqueViolationError:
        raise ConflictError(
            f"trigger {trigger_key!r} is already registered; delete it first or choose another key"
        ) from None
    return TriggerEntry(trigger_key=trigger_key, type=type, description=description, config=config)


def _database_config(config: dict[str, object]) -> DatabaseTriggerConfig:
    try:
        return msgspec.convert(config, DatabaseTriggerConfig)
    except msgspec.ValidationError as error:
        message = str(error).replace("$.", "config.")
        raise ValidationError(
            f"config is not valid: {message}",
            [
                {
                    "field": "config",
                    "message": message + '; e.g. {"table": "lead_sources", '
                    '"operations": ["INSERT"]}',
                }
            ],
        ) from None


async def unregister_trigger(trigger_key: str) -> None:
    """Remove a user-registered trigger source no active subscription still uses."""
    async with transaction() as tx:
        row = await (
            WorkflowTriggerRegistry.select(
                WorkflowTriggerRegistry.is_builtin,
                WorkflowTriggerRegistry.type,
                WorkflowTriggerRegistry.config,
            )
            .where(WorkflowTriggerRegistry.trigger_key == trigger_key)
            .lock_rows("UPDATE")
            .first()
            .run()
        )
        if row is None:
            raise NotFoundError(f"trigger {trigger_key!r} not found")
        if row["is_builtin"]:
            raise ConflictError(f"trigger {trigger_key!r} is built in and cannot be deleted")
        users = await (
            WorkflowSubscription.select(WorkflowSubscription.workflow_id)
            .where(
                (WorkflowSubscription.trigger_key == trigger_key)
                & (WorkflowSubscription.is_active == True)  # noqa: E712 - a SQL comparison
            )
            .run()
        )
        if users:
            workflows = ", ".join(sorted({str(u["workflow_id"]) for u in users}))
            raise ConflictError(
                f"trigger {trigger_key!r} is used by subscriptions of workflows {workflows}; "
                "delete those subscriptions first"
            )
        await (
            WorkflowTriggerRegistry.delete()
            .where(WorkflowTriggerRegistry.trigger_key == trigger_key)
            .run()
        )
        if row["type"] == "database":
            table = str(json.loads(row["config"])["table"])
            await remove_trigger(tx.connection, trigger_key, table)


async def trigger_type_of(trigger_key: str) -> str | None:
    """The type of a registered trigger source, or None when it is not registered."""
    row = await (
        WorkflowTriggerRegistry.select(WorkflowTriggerRegistry.type)
        .where(WorkflowTriggerRegistry.trigger_key == trigger_key)
        .first()
        .run()
    )
    return None if row is None else str(row["type"])
