from __future__ import annotations

import io
import uuid
from collections.abc import Callable

import pytest
from piccolo.engine.postgres import PostgresEngine
from structlog.testing import capture_logs

from config.settings import Settings
from server.actions.catalog import CREDENTIAL_TYPES
from server.crypto.aead import (
    Keyring,
    Sealed,
    format_key_entry,
    generate_key,
    row_binding,
    seal,
    unseal,
)
from server.db.credentials import create_credential, load_credential_data
from server.db.pool import asyncpg_pool, open_pool
from server.db.registry import seed_registries
from server.db.rotation import TableRotation, rotate_keys, rotate_keys_command
from server.db.tables import UserCredentials, WebhookEndpoint, WorkflowDefinition
from server.db.variables import VariableInput, replace_variables, resolve_variables
from server.keyring import KEY_FILE_NAME

OLD_KEY, NEW_KEY = generate_key(), generate_key()
OLD = Keyring([("old", OLD_KEY)])
ROTATED = Keyring([("new", NEW_KEY), ("old", OLD_KEY)])
NEW_ONLY = Keyring([("new", NEW_KEY)])
HOOK_SECRET = b"whsec_rotation-test"


async def _seed(keyring: Keyring, credentials: int = 3) -> tuple[uuid.UUID, uuid.UUID]:
    """Credentials, a workflow with plain, secret and value-less secret variables, and a
    webhook with a secret, all sealed under `keyring`'s primary."""
    await seed_registries([], CREDENTIAL_TYPES, [])
    for number in range(credentials):
        await create_credential(
            name=f"key-{number}",
            type_key="api_key",
            data={"api_key": f"secret-{number}"},
            keyring=keyring,
        )
    workflow = WorkflowDefinition(name="rotating")
    await workflow.save()
    variables = [
        VariableInput(key="plain", value="visible"),
        VariableInput(key="token", value="tok-secret", secret=True),
        VariableInput(key="password", value={"nested": [1]}, secret=True),
        VariableInput(key="unset", secret=True),
    ]
    await replace_variables(workflow.id, variables, keyring)
    hook_id = uuid.uuid4()
    sealed = seal(keyring, HOOK_SECRET, row_binding("webhook_endpoint", hook_id))
    await WebhookEndpoint.insert(
        WebhookEndpoint(
            id=hook_id,
            trigger_key="hook",
            path="incoming",
            auth_type="hmac_sha256",
            secret_ciphertext=sealed.ciphertext,
            secret_key_id=sealed.key_id,
        ),
        WebhookEndpoint(trigger_key="open", path="open"),  # no secret: nothing to rotate
    ).run()
    return workflow.id, hook_id


async def _assert_readable_with(
    keyring: Keyring, workflow_id: uuid.UUID, hook_id: uuid.UUID
) -> None:
    for number in range(3):
        data = await load_credential_data(f"key-{number}", keyring)
        assert data == {"api_key": f"secret-{number}"}
    values, secret_keys = await resolve_variables(workflow_id, keyring)
    assert values == {
        "plain": "visible",
        "token": "tok-secret",
        "password": {"nested": [1]},
        "unset": None,
    }
    assert secret_keys == {"token", "password", "unset"}
    (hook,) = await WebhookEndpoint.select().where(WebhookEndpoint.id == hook_id).run()
    sealed = Sealed(key_id=hook["secret_key_id"], ciphertext=hook["secret_ciphertext"])
    assert unseal(keyring, sealed, row_binding("webhook_endpoint", hook_id)) == HOOK_SECRET


async def test_rotation_reseals_everything_so_the_old_key_can_go_and_a_rerun_does_nothing(
    engine: PostgresEngine,
) -> None:
    workflow_id, hook_id = await _seed(OLD)

    report = await rotate_keys(ROTATED, batch_size=2)

    assert report.primary_key_id == "new"
    assert report.tables == [
        TableRotation(table="user_credentials", rotated=3, failed=0, remaining=0),
        TableRotation(table="workflow_variable", rotated=2, failed=0, remaining=0),
        TableRotation(table="webhook_endpoint", rotated=1, failed=0, remaining=0),
    ]
    await _assert_readable_with(NEW_ONLY, workflow_id, hook_id)

    again = await rotate_keys(ROTATED, batch_size=2)
    assert (again.rotated, again.failed, again.remaining) == (0, 0, 0)


async def test_a_value_that_cannot_be_decrypted_is_counted_and_the_rest_still_rotate(
    engine: PostgresEngine,
) -> None:
    await _seed(OLD)
    lost = Keyring([("lost", generate_key())])
    await create_credential(name="orphan", type_key="api_key", data={"api_key": "x"}, keyring=lost)

    with capture_logs() as logs:
        report = await rotate_keys(ROTATED, batch_size=2)

    credentials = report.tables[0]
    assert (credentials.rotated, credentials.failed, credentials.remaining) == (3, 1, 1)
    failures = [entry for entry in logs if entry["event"] == "secret_rotation_failed"]
    assert len(failures) == 1
    assert "'lost'" in failures[0]["reason"]
    assert "secret-" not in repr(logs)


async def test_rows_held_by_another_transaction_are_skipped_then_finished_by_a_rerun(
    engine: PostgresEngine,
) -> None:
    await _seed(OLD)
    (held,) = await UserCredentials.select(UserCredentials.id).where(
        UserCredentials.name == "key-1"
    )
    async with asyncpg_pool(engine).acquire() as connection, connection.transaction():
        await connection.execute(
            "SELECT 1 FROM user_credentials WHERE id = $1 FOR UPDATE", held["id"]
        )
        first = await rotate_keys(ROTATED, batch_size=2)
    assert (first.tables[0].rotated, first.tables[0].remaining) == (2, 1)

    second = await rotate_keys(ROTATED, batch_size=2)
    assert (second.tables[0].rotated, second.remaining) == (1, 0)


async def test_rotate_keys_command_prints_a_summary_and_exits_zero_when_done(
    database_dsn: str, settings_for: Callable[..., Settings]
) -> None:
    async with open_pool(database_dsn):
        workflow_id, hook_id = await _seed(OLD)
    keys = (format_key_entry("new", NEW_KEY), format_key_entry("old", OLD_KEY))
    output = io.StringIO()

    code = await rotate_keys_command(settings_for(encryption_keys=keys), output=output)

    assert code == 0
    text = output.getvalue()
    assert "primary key: new" in text
    assert "user_credentials: 3 re-encrypted, 0 failed, 0 remaining" in text
    assert "workflow_variable: 2 re-encrypted" in text
    assert "webhook_endpoint: 1 re-encrypted" in text
    assert "older keys can be removed" in text
    assert "secret-" not in text
    async with open_pool(database_dsn):
        await _assert_readable_with(NEW_ONLY, workflow_id, hook_id)


async def test_rotate_keys_command_exits_non_zero_when_values_cannot_be_decrypted(
    database_dsn: str, settings_for: Callable[..., Settings]
) -> None:
    async with open_pool(database_dsn):
        await _seed(OLD, credentials=1)
    output = io.StringIO()

    code = await rotate_keys_command(
        settings_for(encryption_keys=(format_key_entry("new", NEW_KEY),)), output=output
    )

    assert code == 1
    assert "user_credentials: 0 re-encrypted, 1 failed, 1 remaining" in output.getvalue()
    assert "add the keys they were sealed with" in output.getvalue()


async def test_rotate_keys_command_without_any_key_refuses_instead_of_making_one(
    settings_for: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for()

    code = await rotate_keys_command(settings, output=io.StringIO())

    assert code == 2
    assert "ENCRYPTION_KEYS is not set" in capsys.readouterr().err
    assert not (settings.data_path / KEY_FILE_NAME).exists()


async def test_rotate_keys_command_reports_malformed_keys(
    settings_for: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    code = await rotate_keys_command(settings_for(encryption_keys=("k1",)), output=io.StringIO())

    assert code == 2
    assert "ENCRYPTION_KEYS entry 1: no ':' found" in capsys.readouterr().err
