from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx
import pytest

from config.settings import Settings
from server.crypto.aead import Keyring, SecretDecryptionError
from server.db.tables import WorkflowDefinition, WorkflowVariable
from server.db.variables import (
    MAX_VALUE_BYTES,
    VariableInput,
    replace_variables,
    resolve_variables,
)
from server.errors import NotFoundError, ValidationError
from server.keyring import load_keyring

SECRET = "sk_live_do-not-leak-me"


async def _workflow() -> uuid.UUID:
    workflow = WorkflowDefinition(name="Lead processing")
    await workflow.save()
    return workflow.id


def _url(workflow_id: uuid.UUID, key: str = "") -> str:
    return f"/api/v1/workflows/{workflow_id}/variables" + (f"/{key}" if key else "")


async def _stored(workflow_id: uuid.UUID, key: str) -> dict[str, object]:
    rows = await (
        WorkflowVariable.select()
        .where((WorkflowVariable.workflow_id == workflow_id) & (WorkflowVariable.key == key))
        .run()
    )
    return rows[0]


@pytest.fixture
def keyring(api_client: httpx.AsyncClient, settings_for: Callable[..., Settings]) -> Keyring:
    """The keyring of the running app (it generated the key file in the test's data dir)."""
    return load_keyring(settings_for())


async def test_plain_variables_are_created_shown_and_overwritten(
    api_client: httpx.AsyncClient,
) -> None:
    workflow_id = await _workflow()
    created = await api_client.post(_url(workflow_id), json={"key": "owner", "value": "ops@x"})
    assert created.status_code == 201
    assert created.json()["value"] == "ops@x"
    assert created.json()["has_value"] is True
    replaced = await api_client.post(
        _url(workflow_id), json={"key": "owner", "value": {"team": ["a", "b"]}}
    )
    assert replaced.status_code == 200
    listed = (await api_client.get(_url(workflow_id))).json()
    assert [(v["key"], v["value"], v["secret"]) for v in listed["items"]] == [
        ("owner", {"team": ["a", "b"]}, False)
    ]
    assert listed["next_cursor"] is None


async def test_a_secret_is_sealed_at_rest_masked_in_answers_and_resolved_in_memory(
    api_client: httpx.AsyncClient, keyring: Keyring
) -> None:
    workflow_id = await _workflow()
    body = {"key": "api_key", "value": SECRET, "secret": True}
    created = await api_client.post(_url(workflow_id), json=body)
    assert created.status_code == 201
    assert created.json()["value"] is None
    assert created.json()["secret"] is True
    assert created.json()["has_value"] is True
    listed = await api_client.get(_url(workflow_id))
    for response in (created, listed):
        assert SECRET not in response.text
    row = await _stored(workflow_id, "api_key")
    assert row["value"] is None
    assert row["key_id"] == keyring.primary_key_id
    assert isinstance(row["ciphertext"], bytes)
    assert SECRET.encode() not in row["ciphertext"]
    values, secret_keys = await resolve_variables(workflow_id, keyring)
    assert values == {"api_key": SECRET}
    assert secret_keys == frozenset({"api_key"})


async def test_a_secret_posted_again_without_value_keeps_the_stored_one(
    api_client: httpx.AsyncClient, keyring: Keyring
) -> None:
    workflow_id = await _workflow()
    await api_client.post(_url(workflow_id), json={"key": "token", "value": SECRET, "secret": True})
    again = await api_client.post(_url(workflow_id), json={"key": "token", "secret": True})
    assert again.status_code == 200
    assert again.json()["has_value"] is True
    values, _ = await resolve_variables(workflow_id, keyring)
    assert values == {"token": SECRET}


async def test_overwriting_a_secret_keeps_its_row_so_it_still_decrypts(
    api_client: httpx.AsyncClient, keyring: Keyring
) -> None:
    workflow_id = await _workflow()
    body = {"key": "token", "value": "first-secret", "secret": True}
    await api_client.post(_url(workflow_id), json=body)
    row_id = (await _stored(workflow_id, "token"))["id"]
    await api_client.post(_url(workflow_id), json={**body, "value": [12345678, "second-secret"]})
    assert (await _stored(workflow_id, "token"))["id"] == row_id
    assert (await resolve_variables(workflow_id, keyring))[0] == {
        "token": [12345678, "second-secret"]
    }


async def test_making_a_plain_variable_secret_seals_its_value(
    api_client: httpx.AsyncClient, keyring: Keyring
) -> None:
    workflow_id = await _workflow()
    await api_client.post(_url(workflow_id), json={"key": "token", "value": SECRET})
    turned = await api_client.post(_url(workflow_id), json={"key": "token", "secret": True})
    assert turned.json() == {**turned.json(), "value": None, "secret": True, "has_value": True}
    assert SECRET not in (await api_client.get(_url(workflow_id))).text
    row = await _stored(workflow_id, "token")
    assert row["value"] is None
    assert (await resolve_variables(workflow_id, keyring))[0] == {"token": SECRET}


async def test_making_a_secret_plain_replaces_it(
    api_client: httpx.AsyncClient, keyring: Keyring
) -> None:
    workflow_id = await _workflow()
    await api_client.post(_url(workflow_id), json={"key": "k", "value": SECRET, "secret": True})
    plain = await api_client.post(_url(workflow_id), json={"key": "k", "value": "public"})
    assert plain.json()["value"] == "public"
    row = await _stored(workflow_id, "k")
    assert row["ciphertext"] is None
    assert row["key_id"] is None
    assert await resolve_variables(workflow_id, keyring) == ({"k": "public"}, frozenset())


async def test_a_secret_declared_without_a_value_has_none(
    api_client: httpx.AsyncClient, keyring: Keyring
) -> None:
    workflow_id = await _workflow()
    response = await api_client.post(_url(workflow_id), json={"key": "later", "secret": True})
    assert response.status_code == 201
    assert response.json()["has_value"] is False
    assert await resolve_variables(workflow_id, keyring) == ({"later": None}, frozenset({"later"}))


async def test_a_secret_copied_to_another_variable_row_fails_to_decrypt(
    api_client: httpx.AsyncClient, keyring: Keyring
) -> None:
    workflow_id = await _workflow()
    for key in ("a", "b"):
        await api_client.post(
            _url(workflow_id), json={"key": key, "value": f"{key}-secret", "secret": True}
        )
    moved = (await _stored(workflow_id, "a"))["ciphertext"]
    await WorkflowVariable.update({WorkflowVariable.ciphertext: moved}).where(
        WorkflowVariable.key == "b"
    )
    with pytest.raises(SecretDecryptionError, match="moved from another row"):
        await resolve_variables(workflow_id, keyring)


async def test_delete_answers_204_and_unknown_keys_404(api_client: httpx.AsyncClient) -> None:
    workflow_id = await _workflow()
    await api_client.post(_url(workflow_id), json={"key": "owner", "value": 1})
    assert (await api_client.delete(_url(workflow_id, "owner"))).status_code == 204
    again = await api_client.delete(_url(workflow_id, "owner"))
    assert again.status_code == 404
    assert "'owner' not found" in again.json()["detail"]
    assert (await api_client.get(_url(workflow_id))).json()["items"] == []


async def test_an_unknown_workflow_answers_404(api_client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    answers = [
        await api_client.get(_url(missing)),
        await api_client.post(_url(missing), json={"key": "k", "value": 1}),
        await api_client.delete(_url(missing, "k")),
    ]
    for response in answers:
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert f"workflow {missing} not found" in response.json()["detail"]


async def test_list_pages_by_key(api_client: httpx.AsyncClient) -> None:
    workflow_id = await _workflow()
    for key in ("c", "a", "b"):
        await api_client.post(_url(workflow_id), json={"key": key, "value": key})
    first = (await api_client.get(_url(workflow_id), params={"limit": 2})).json()
    assert [v["key"] for v in first["items"]] == ["a", "b"]
    second = await api_client.get(
        _url(workflow_id), params={"limit": 2, "cursor": first["next_cursor"]}
    )
    assert [v["key"] for v in second.json()["items"]] == ["c"]
    assert second.json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "1st", "value": 1}, "key"),
        ({"key": "has-dash", "value": 1}, "key"),
        ({"key": "k" * 101, "value": 1}, "key"),
        ({"key": 5, "value": 1}, "key"),
        ({"value": 1}, "key"),
        ({"key": "k", "value": 1, "secret": "yes"}, "secret"),
        ({"key": "k", "value": SECRET, "secret": True, "hidden": True}, "hidden"),
    ],
)
async def test_bad_bodies_answer_400_naming_the_field(
    api_client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    workflow_id = await _workflow()
    response = await api_client.post(_url(workflow_id), json=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert field in json.dumps(response.json())
    assert SECRET not in response.text


async def test_a_malformed_json_body_answers_400(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post(
        _url(await _workflow()), content=b"{key", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_value_too_large_answers_422_naming_value(api_client: httpx.AsyncClient) -> None:
    body = {"key": "big", "value": "x" * MAX_VALUE_BYTES, "secret": True}
    response = await api_client.post(_url(await _workflow()), json=body)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "value", "message": f"must encode to at most {MAX_VALUE_BYTES} bytes"}
    ]


async def test_replace_variables_writes_the_whole_set_in_the_callers_transaction(
    api_client: httpx.AsyncClient, keyring: Keyring
) -> None:
    workflow_id = await _workflow()
    await api_client.post(_url(workflow_id), json={"key": "kept", "value": SECRET, "secret": True})
    await api_client.post(_url(workflow_id), json={"key": "stale", "value": 1})
    variables = [
        VariableInput(key="kept", value=None, secret=True),
        VariableInput(key="owner", value="ops@x"),
    ]
    async with WorkflowVariable._meta.db.transaction():
        await replace_variables(workflow_id, variables, keyring)
    values, secret_keys = await resolve_variables(workflow_id, keyring)
    assert values == {"kept": SECRET, "owner": "ops@x"}
    assert secret_keys == frozenset({"kept"})

    with pytest.raises(RuntimeError, match="import failed"):
        await _replace_then_fail(workflow_id, keyring)
    assert (await resolve_variables(workflow_id, keyring))[0] == values  # rolled back


async def _replace_then_fail(workflow_id: uuid.UUID, keyring: Keyring) -> None:
    async with WorkflowVariable._meta.db.transaction():
        await replace_variables(workflow_id, [VariableInput(key="only", value=1)], keyring)
        raise RuntimeError("import failed later")


async def test_replace_variables_refuses_bad_input_naming_the_item(keyring: Keyring) -> None:
    workflow_id = await _workflow()
    repeated = [VariableInput(key="a", value=1), VariableInput(key="a", value=2)]
    with pytest.raises(ValidationError) as raised:
        await replace_variables(workflow_id, repeated, keyring)
    assert raised.value.problems == [{"field": "variables[1].key", "message": "repeated; keep one"}]
    with pytest.raises(ValidationError) as raised:
        await replace_variables(workflow_id, [VariableInput(key="no good", value=1)], keyring)
    assert raised.value.problems[0]["field"] == "variables[0].key"
    with pytest.raises(NotFoundError):
        await replace_variables(uuid.uuid4(), [], keyring)


def test_the_repr_of_a_secret_input_hides_its_value() -> None:
    secret = VariableInput(key="token", value=SECRET, secret=True)
    assert SECRET not in repr(secret)
    assert SECRET not in str([secret])
    assert "'public'" in repr(VariableInput(key="k", value="public"))


@pytest.mark.parametrize("value", ["short", 1234, ["long-enough-secret", "abc"], {"pin": "12"}])
async def test_a_secret_too_short_to_redact_is_refused_naming_the_field(
    api_client: httpx.AsyncClient, value: object
) -> None:
    workflow_id = await _workflow()
    response = await api_client.post(
        _url(workflow_id), json={"key": "token", "value": value, "secret": True}
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == "value"
    assert "at least 8 characters" in problem["errors"][0]["message"]
    plain = await api_client.post(_url(workflow_id), json={"key": "token", "value": value})
    assert plain.status_code in {200, 201}, plain.text
