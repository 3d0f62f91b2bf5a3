"""Key rotation: re-encrypt every sealed value under the keyring's primary key.

Sealed columns: `user_credentials.ciphertext`, `workflow_variable.ciphertext` and
`webhook_endpoint.secret_ciphertext`, each with its key id column and bound to its row by
`row_binding(<table>, <id>)`. Rows whose key id differs from the primary are taken in id order,
in batches, each batch one short transaction whose rows are locked `FOR UPDATE SKIP LOCKED`:
concurrent rotations split the work instead of waiting, and a writer that holds a row is never
blocked for long. A run that stops part way is resumed by running it again, since only rows
not yet under the primary are selected. A row that does not decrypt (unknown key id, altered
bytes) is counted and logged by id, never with its content, and left as it is.

Operators: put the new key first in ENCRYPTION_KEYS on every process and restart them, run
`switchyard rotate-keys` until it reports nothing remaining, then remove the old key.
"""

from __future__ import annotations

import sys
import uuid
from typing import NamedTuple, TextIO

import msgspec
import structlog
from piccolo.columns import Column
from piccolo.columns.combination import And
from piccolo.table import Table

from config.settings import Settings
from server.crypto.aead import Keyring, Sealed, SecretDecryptionError, row_binding, seal, unseal
from server.db.database import database_addresses
from server.db.migrations import migrated_pool
from server.db.tables import UserCredentials, WebhookEndpoint, WorkflowVariable
from server.keyring import load_keyring

log = structlog.get_logger(__name__)

DEFAULT_BATCH_SIZE = 500
EXIT_NO_KEYS = 2


class SealedColumn(NamedTuple):
    """A table's sealed value column and the column naming its key."""

    table: type[Table]
    ciphertext_name: str
    key_id_name: str

    @property
    def ciphertext(self) -> Column:
        return self.table._meta.get_column_by_name(self.ciphertext_name)

    @property
    def key_id(self) -> Column:
        return self.table._meta.get_column_by_name(self.key_id_name)


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn(UserCredentials, "ciphertext", "key_id"),
    SealedColumn(WorkflowVariable, "ciphertext", "key_id"),
    SealedColumn(WebhookEndpoint, "secret_ciphertext", "secret_key_id"),
)


class TableRotation(msgspec.Struct, frozen=True, kw_only=True):
    table: str
    rotated: int
    failed: int
    remaining: int
    """Rows still not under the primary key after the run: failed ones and any a concurrent
    writer held (SKIP LOCKED) or re-sealed with an old primary while the run went on."""


class RotationReport(msgspec.Struct, frozen=True, kw_only=True):
    primary_key_id: str
    tables: list[TableRotation]

    @property
    def rotated(self) -> int:
        return sum(table.rotated for table in self.tables)

    @property
    def failed(self) -> int:
        return sum(table.failed for table in self.tables)

    @property
    def remaining(self) -> int:
        return sum(table.remaining for table in self.tables)


class _SealedRow(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    key_id: str
    ciphertext: bytes


async def rotate_keys(keyring: Keyring, batch_size: int = DEFAULT_BATCH_SIZE) -> RotationReport:
    """Re-seal every value not under `keyring.primary_key_id`; safe to rerun and to run twice.

    The keyring must hold the keys the values are sealed with now as well as the primary.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    tables = [await _rotate_table(column, keyring, batch_size) for column in SEALED_COLUMNS]
    return RotationReport(primary_key_id=keyring.primary_key_id, tables=tables)


async def _rotate_table(column: SealedColumn, keyring: Keyring, batch_size: int) -> TableRotation:
    rotated = failed = 0
    after: uuid.UUID | None = None
    while True:
        async with column.table._meta.db.transaction():
            rows = await _lock_batch(column, keyring.primary_key_id, after, batch_size)
            for row in rows:
                if await _reseal(column, row, keyring):
                    rotated += 1
                else:
                    failed += 1
        if not rows:
            break
        after = rows[-1].id
        log.info("secrets_rotated", table=column.table._meta.tablename, rotated=rotated)
    remaining = await column.table.count().where(_not_primary(column, keyring.primary_key_id))
    return TableRotation(
        table=column.table._meta.tablename, rotated=rotated, failed=failed, remaining=remaining
    )


async def _lock_batch(
    column: SealedColumn, primary_key_id: str, after: uuid.UUID | None, batch_size: int
) -> list[_SealedRow]:
    """The next rows after `after` not under the primary, locked; rows held by others are
    skipped rather than waited for (they are counted as remaining)."""
    table = column.table
    condition = _not_primary(column, primary_key_id)
    if after is not None:
        condition = condition & (table._meta.primary_key > after)
    rows = await (
        table.select(
            table._meta.primary_key.as_alias("id"),
            column.key_id.as_alias("key_id"),
            column.ciphertext.as_alias("ciphertext"),
        )
        .where(condition)
        .order_by(table._meta.primary_key)
        .limit(batch_size)
        .lock_rows("UPDATE", skip_locked=True)
        .run()
    )
    return [msgspec.convert(row, _SealedRow) for row in rows]


def _not_primary(column: SealedColumn, primary_key_id: str) -> And:
    # A NULL key id (a secret with no value) compares as NULL and is never selected.
    return column.ciphertext.is_not_null() & (column.key_id != primary_key_id)


async def _reseal(column: SealedColumn, row: _SealedRow, keyring: Keyring) -> bool:
    tablename = column.table._meta.tablename
    binding = row_binding(tablename, row.id)
    try:
        plaintext = unseal(keyring, Sealed(key_id=row.key_id, ciphertext=row.ciphertext), binding)
    except SecretDecryptionError as error:
        log.error("secret_rotation_failed", table=tablename, row_id=str(row.id), reason=str(error))
        return False
    sealed = seal(keyring, plaintext, binding)
    await (
        column.table.update({column.ciphertext: sealed.ciphertext, column.key_id: sealed.key_id})
        .where(column.table._meta.primary_key == row.id)
        .run()
    )
    return True


async def rotate_keys_command(settings: Settings, *, output: TextIO | None = None) -> int:
    """`switchyard rotate-keys`: rotate, print a summary; exit 0 only when nothing is left,
    1 when values remain, 2 when there are no usable keys."""
    out = output or sys.stdout
    try:
        keyring = load_keyring(settings, create=False)
    except ValueError as error:
        sys.stderr.write(f"switchyard rotate-keys: {error}\n")
        return EXIT_NO_KEYS
    with database_addresses(settings) as addresses:
        async with migrated_pool(addresses, min_size=1, max_size=2):
            report = await rotate_keys(keyring)
    out.write(f"primary key: {report.primary_key_id}\n")
    for table in report.tables:
        out.write(
            f"{table.table}: {table.rotated} re-encrypted, {table.failed} failed, "
            f"{table.remaining} remaining\n"
        )
    if report.failed:
        out.write(
            "some values could not be decrypted: add the keys they were sealed with to "
            "ENCRYPTION_KEYS (the log names each row), then run again\n"
        )
        return 1
    if report.remaining:
        out.write("some rows were busy or changed meanwhile: run again to finish\n")
        return 1
    out.write("every secret is sealed with the primary key; older keys can be removed\n")
    return 0
