"""Workflow variables (table `workflow_variable`): plain values in JSONB, secrets sealed.

A secret variable's value is JSON-encoded and sealed with AES-256-GCM bound to its row id
(`server.crypto.aead`); its `value` column stays NULL. Views mask secrets (`value` null,
`has_value` says whether one is stored). Writing a secret with a null value keeps the value
already stored (secrets are write-only, so clients and exported documents send them back as
null), and turning a plain variable secret seals its current value. Rows are updated in place,
never re-created, so the row id a ciphertext is bound to stays the same. Writers lock the
workflow's definition row (FOR NO KEY UPDATE), which serialises writers of one workflow's
variables without blocking readers or foreign-key checks. `resolve_variables` is the one way
back to the plaintext, for the engine, in memory only.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Final, Protocol

import msgspec
from piccolo.columns import Column
from piccolo.query.methods.select import Select

from server.crypto.aead import Keyring, Sealed, row_binding, seal, unseal
from server.db.pool import asyncpg_pool, piccolo_database
from server.db.tables import WorkflowDefinition, WorkflowVariable
from server.engine.rendering import MIN_DESIGN_SECRET_LENGTH, secret_strings
from server.errors import NotFoundError, ValidationError

TABLE = "workflow_variable"
KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
MAX_VALUE_BYTES = 64 * 1024
_KEY = re.compile(KEY_PATTERN)

VariableKey = Annotated[
    str,
    msgspec.Meta(
        pattern=KEY_PATTERN,
        description="a letter or _, then letters, digits or _ (at most 100); `vars.<key>`",
    ),
]


class VariableInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A variable to write. For a secret, a null value keeps the value already stored."""

    key: VariableKey
    value: object = None
    secret: bool = False

    def __repr__(self) -> str:
        shown = "<redacted>" if self.secret else repr(self.value)
        return f"VariableInput(key={self.key!r}, value={shown}, secret={self.secret!r})"


class VariableFields(Protocol):
    """What `replace_variables` reads of a variable: `VariableInput` or a document's variable."""

    @property
    def key(self) -> str: ...
    @property
    def value(self) -> object: ...
    @property
    def secret(self) -> bool: ...


class VariableView(msgspec.Struct, frozen=True, kw_only=True):
    """A variable as the API shows it: secrets have `value` null."""

    key: str
    value: object
    secret: bool
    has_value: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class _StoredVariable(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    key: str
    value: object
    secret: bool
    key_id: str | None
    ciphertext: bytes | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def view(self) -> VariableView:
        return VariableView(
            key=self.key,
            value=None if self.secret else self.value,
            secret=self.secret,
            has_value=self.key_id is not None if self.secret else True,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


async def list_variables(
    workflow_id: uuid.UUID, *, limit: int, after_key: str | None
) -> list[VariableView]:
    """A workflow's variables by key, secrets masked; keyset on the (workflow_id, key) index."""
    await _require_workflow(workflow_id, lock=False)
    query = _select_stored().where(WorkflowVariable.workflow_id == workflow_id)
    if after_key is not None:
        query = query.where(WorkflowVariable.key > after_key)
    rows = await query.order_by(WorkflowVariable.key).limit(limit).run()
    return [msgspec.convert(row, _StoredVariable).view() for row in rows]


async def set_variable(
    workflow_id: uuid.UUID, variable: VariableInput, keyring: Keyring
) -> tuple[VariableView, bool]:
    """Create or overwrite one variable; the view and True when it was created."""
    _check_input(variable, "")
    async with WorkflowVariable._meta.db.transaction():
        await _require_workflow(workflow_id, lock=True)
        existing = {row.key: row for row in await _stored(workflow_id, [variable.key])}
        created = variable.key not in existing
        await _write(workflow_id, variable, existing.get(variable.key), keyring)
        (row,) = await _stored(workflow_id, [variable.key])
    return row.view(), created


async def replace_variables(
    workflow_id: uuid.UUID, variables: Sequence[VariableFields], keyring: Keyring
) -> None:
    """Make `variables` the workflow's whole set: write each, delete the keys not given.

    Runs in the caller's Piccolo transaction when there is one (workflow import), else in its
    own. Secrets given as null keep a stored value of the same key.

    Raises:
        ValidationError: a bad or repeated key, or a value too large; fields are named
            `variables[i].key` / `variables[i].value`.
        NotFoundError: the workflow does not exist.
    """
    seen: set[str] = set()
    for index, variable in enumerate(variables):
        _check_input(variable, f"variables[{index}].")
        if variable.key in seen:
            raise ValidationError(
                f"variable {variable.key!r} is given twice",
                [{"field": f"variables[{index}].key", "message": "repeated; keep one"}],
            )
        seen.add(variable.key)
    async with WorkflowVariable._meta.db.transaction():
        await _require_workflow(workflow_id, lock=True)
        existing = {row.key: row for row in await _stored(workflow_id, None)}
        stale = [key for key in existing if key not in seen]
        if stale:
            await (
                WorkflowVariable.delete()
                .where(
                    (WorkflowVariable.workflow_id == workflow_id)
                    & WorkflowVariable.key.is_in(stale)
                )
                .run()
            )
        for variable in variables:
            await _write(workflow_id, variable, existing.get(variable.key), keyring)


async def delete_variable(workflow_id: uuid.UUID, key: str) -> None:
    await _require_workflow(workflow_id, lock=False)
    deleted = (
        await WorkflowVariable.delete()
        .where((WorkflowVariable.workflow_id == workflow_id) & (WorkflowVariable.key == key))
        .returning(WorkflowVariable.id)
        .run()
    )
    if not deleted:
        raise NotFoundError(f"variable {key!r} not found in workflow {workflow_id}")


async def resolve_variables(
    workflow_id: uuid.UUID, keyring: Keyring
) -> tuple[dict[str, object], frozenset[str]]:
    """Every variable's value, secrets decrypted (in memory only), and the secret keys.

    A secret with no stored value resolves to None. The runtime redacts the values of the
    returned keys from step inputs, outputs, errors and logs; it reads the rows together with
    the rest of a step's inputs (`VARIABLES_JSON`, decoded by `variables_from_json`).

    Raises:
        SecretDecryptionError: a secret cannot be decrypted with this keyring.
    """
    async with asyncpg_pool(piccolo_database()).acquire() as pooled:
        text = await pooled.fetchval(
            f"SELECT {VARIABLES_JSON.format(workflow_id='$1::uuid')}",
            workflow_id,
        )
    return variables_from_json(text, keyring)


# A workflow's variables as one JSON array of [id, key, value, secret, key_id, ciphertext
# (base64)], for a scalar subquery in the runtime's read of a step's inputs; `{workflow_id}` is
# the SQL expression naming the workflow.
VARIABLES_JSON: Final = """(
    SELECT coalesce(json_agg(json_build_array(
               v.id, v.key, v.value, v.secret, v.key_id, encode(v.ciphertext, 'base64'))), '[]')::text
    FROM workflow_variable v WHERE v.workflow_id = {workflow_id}
)"""


def variables_from_json(
    text: str | None, keyring: Keyring
) -> tuple[dict[str, object], frozenset[str]]:
    """Decode `VARIABLES_JSON`: values (secrets unsealed) and the secret keys."""
    values: dict[str, object] = {}
    secret_keys: set[str] = set()
    for row_id, key, value, secret, key_id, ciphertext in msgspec.json.decode(text or "[]"):
        if secret:
            secret_keys.add(key)
            values[key] = _unseal(
                keyring,
                uuid.UUID(row_id),
                key_id,
                None if ciphertext is None else base64.b64decode(ciphertext),
            )
        else:
            values[key] = value
    return values, frozenset(secret_keys)


def _unseal(
    keyring: Keyring, row_id: uuid.UUID, key_id: str | None, ciphertext: bytes | None
) -> object:
    if key_id is None or ciphertext is None:
        return None
    sealed = Sealed(key_id=key_id, ciphertext=ciphertext)
    return msgspec.json.decode(unseal(keyring, sealed, row_binding(TABLE, row_id)))


async def _write(
    workflow_id: uuid.UUID,
    variable: VariableFields,
    existing: _StoredVariable | None,
    keyring: Keyring,
) -> None:
    row_id = existing.id if existing is not None else uuid.uuid4()
    columns = _columns(row_id, variable, existing, keyring)
    if existing is None:
        row = WorkflowVariable(id=row_id, workflow_id=workflow_id, key=variable.key, **columns)
        await WorkflowVariable.insert(row).run()
        return
    changes: dict[Column | str, Any] = dict(columns.items())
    changes["updated_at"] = dt.datetime.now(dt.UTC)
    await WorkflowVariable.update(changes).where(WorkflowVariable.id == row_id).run()


def _columns(
    row_id: uuid.UUID,
    variable: VariableFields,
    existing: _StoredVariable | None,
    keyring: Keyring,
) -> dict[str, Any]:
    """The value columns to store for `variable` (JSONB values as encoded JSON text)."""
    if not variable.secret:
        value = None if variable.value is None else msgspec.json.encode(variable.value).decode()
        return {"value": value, "secret": False, "ciphertext": None, "key_id": None}
    plaintext: bytes | None = None
    if variable.value is not None:
        plaintext = msgspec.json.encode(variable.value)
    elif existing is not None and existing.secret:
        return {"value": None, "secret": True}  # null keeps the stored secret
    elif existing is not None and existing.value is not None:
        _check_secret_length(variable.key, existing.value, "secret")
        plaintext = msgspec.json.encode(existing.value)  # plain turned secret: seal its value
    if plaintext is None:
        return {"value": None, "secret": True, "ciphertext": None, "key_id": None}
    sealed = seal(keyring, plaintext, row_binding(TABLE, row_id))
    return {"value": None, "secret": True, "ciphertext": sealed.ciphertext, "key_id": sealed.key_id}


def _check_input(variable: VariableFields, prefix: str) -> None:
    """What msgspec checks on decode, for inputs built in code (imports) too, plus size, plus
    the length of secrets (redaction finds a secret by its value: a short one is not told apart
    from ordinary text)."""
    if not isinstance(variable.key, str) or not _KEY.match(variable.key):
        raise ValidationError(
            "variable key is not valid",
            [{"field": f"{prefix}key", "message": f"must match {KEY_PATTERN}"}],
        )
    if variable.value is not None and len(msgspec.json.encode(variable.value)) > MAX_VALUE_BYTES:
        raise ValidationError(
            f"variable {variable.key!r} is too large",
            [
                {
                    "field": f"{prefix}value",
                    "message": f"must encode to at most {MAX_VALUE_BYTES} bytes",
                }
            ],
        )
    if variable.secret and variable.value is not None:
        _check_secret_length(variable.key, variable.value, f"{prefix}value")


def _check_secret_length(key: str, value: object, field: str) -> None:
    """A secret text or number, and each text inside a structured secret, needs
    MIN_DESIGN_SECRET_LENGTH characters (numbers inside one, such as a port, are not secret)."""
    texts = secret_strings([value]) if isinstance(value, str | int | float) else _texts(value)
    if all(len(text) >= MIN_DESIGN_SECRET_LENGTH for text in texts):
        return
    raise ValidationError(
        f"secret variable {key!r} is too short",
        [
            {
                "field": field,
                "message": f"a secret (and each text inside one) must have at least "
                f"{MIN_DESIGN_SECRET_LENGTH} characters, so that it can be redacted wherever "
                "it appears; use a longer secret, or a plain variable if it is not secret",
            }
        ],
    )


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _texts(item)]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    return []


async def _require_workflow(workflow_id: uuid.UUID, *, lock: bool) -> None:
    query = WorkflowDefinition.select(WorkflowDefinition.id).where(
        WorkflowDefinition.id == workflow_id
    )
    if lock:
        query = query.lock_rows("NO KEY UPDATE")
    if not await query.run():
        raise NotFoundError(f"workflow {workflow_id} not found")


async def _stored(workflow_id: uuid.UUID, keys: list[str] | None) -> list[_StoredVariable]:
    query = _select_stored().where(WorkflowVariable.workflow_id == workflow_id)
    if keys is not None:
        query = query.where(WorkflowVariable.key.is_in(keys))
    return [msgspec.convert(row, _StoredVariable) for row in await query.run()]


def _select_stored() -> Select[WorkflowVariable]:
    table = WorkflowVariable
    return table.select(
        table.id, table.key, table.value, table.secret, table.key_id, table.ciphertext,
        table.created_at, table.updated_at,
    ).output(load_json=True)  # fmt: skip


def variables_writer(
    keyring: Keyring,
) -> Callable[[uuid.UUID, Sequence[VariableFields]], Awaitable[None]]:
    """`replace_variables` bound to a keyring, as workflow import takes it."""

    async def write(workflow_id: uuid.UUID, variables: Sequence[VariableFields]) -> None:
        await replace_variables(workflow_id, variables, keyring)

    return write
