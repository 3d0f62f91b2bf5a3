"""Installing and removing database-change triggers on watched tables.

A `database` trigger source names a table, the operations to watch and optionally the columns
whose change matters; Switchyard creates a row-level `AFTER` trigger on that table calling
`switchyard_capture_change` (see its migration), named after the trigger key. Only tables the
operator lists in `DATABASE_TRIGGER_TABLES` may carry one, and never Switchyard's own tables
(a trigger on `trigger_event` or `job` would feed itself). DDL is built by PostgreSQL's
`format()` with `%I`/`%L`, so names are quoted by the server, never by string pasting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Final, Literal

import msgspec

from server.db.tables import TABLES
from server.errors import ValidationError
from server.queue.client import Connection

Operation = Literal["INSERT", "UPDATE", "DELETE"]
OWN_TABLES: Final = frozenset(
    {table._meta.tablename for table in TABLES}
    | {"api_token", "trigger_health", "migration", "webhook_registration"}
)


class DatabaseTriggerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    table: Annotated[
        str, msgspec.Meta(pattern=r"^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$")
    ]
    operations: Annotated[list[Operation], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["INSERT", "UPDATE", "DELETE"]
    )
    columns: list[Annotated[str, msgspec.Meta(min_length=1, max_length=63)]] = msgspec.field(
        default_factory=list
    )


TABLE_EXISTS: Final = "SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL"
CREATE_TRIGGER: Final = """
SELECT format(
  'CREATE TRIGGER %I AFTER %s ON %I.%I FOR EACH ROW EXECUTE FUNCTION switchyard_capture_change(%L, %L)',
  $1::text, $2::text, $3::text, $4::text, $5::text, $6::text)
"""
DROP_TRIGGER: Final = (
    "SELECT format('DROP TRIGGER IF EXISTS %I ON %I.%I', $1::text, $2::text, $3::text)"
)


def trigger_name(trigger_key: str) -> str:
    """A stable, valid identifier per trigger key (keys may hold characters names cannot)."""
    return "switchyard_" + hashlib.sha256(trigger_key.encode()).hexdigest()[:20]


def qualified(table: str) -> tuple[str, str]:
    """`schema.table`, or `table` in the `public` schema."""
    schema, _, name = table.rpartition(".")
    return (schema or "public"), name


def check_allowed(config: DatabaseTriggerConfig, allowed: Sequence[str]) -> tuple[str, str]:
    """The (schema, table) to watch, or a ValidationError saying how to allow it."""
    schema, name = qualified(config.table)
    listed = {qualified(entry) for entry in allowed}
    if name in OWN_TABLES and schema == "public":
        raise _invalid("config.table", f"{config.table} is one of Switchyard's own tables")
    if (schema, name) not in listed:
        raise _invalid(
            "config.table",
            f"{schema}.{name} is not in DATABASE_TRIGGER_TABLES; an operator must list it there",
        )
    return schema, name


async def install_trigger(
    connection: Connection, trigger_key: str, config: DatabaseTriggerConfig, allowed: Sequence[str]
) -> None:
    """Create the capture trigger; call inside the transaction that registers the source."""
    schema, name = check_allowed(config, allowed)
    if not await connection.fetchval(TABLE_EXISTS, schema, name):
        raise _invalid("config.table", f"table {schema}.{name} does not exist; create it first")
    events = " OR ".join(dict.fromkeys(config.operations))
    columns = msgspec.json.encode(config.columns).decode()
    statement = await connection.fetchval(
        CREATE_TRIGGER, trigger_name(trigger_key), events, schema, name, trigger_key, columns
    )
    await connection.execute(statement)


async def remove_trigger(connection: Connection, trigger_key: str, table: str) -> None:
    schema, name = qualified(table)
    if await connection.fetchval(TABLE_EXISTS, schema, name):
        statement = await connection.fetchval(DROP_TRIGGER, trigger_name(trigger_key), schema, name)
        await connection.execute(statement)


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(message, [{"field": field, "message": message}])
