from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from config.settings import Settings
from server.crypto.aead import SecretDecryptionError
from server.db.credentials import load_credential_data
from server.db.tables import UserCredentials
from server.errors import NotFoundError, ValidationError
from server.keyring import load_keyring

PASSWORD = "correct-horse-battery-staple"
SMTP = {"host": "smtp.example.com", "port": 587, "username": "ops", "password": PASSWORD}


async def _create(
    client: httpx.AsyncClient, name: str = "mail", kind: str = "smtp", data: object = SMTP
) -> httpx.Response:
    return await client.post("/api/v1/credentials", json={"name": name, "type": kind, "data": data})


def _problems(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/problem+json"
    return {problem["field"]: problem["message"] for problem in response.json()["errors"]}


async def test_create_answers_201_without_the_data(api_client: httpx.AsyncClient) -> None:
    response = await _create(api_client)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "type", "created_at", "updated_at"}
    assert body["name"] == "mail"
    assert body["type"] == "smtp"
    assert PASSWORD not in response.text
    uuid.UUID(body["id"])


async def test_credential_data_is_stored_encrypted_and_decrypts_for_actions(
    api_client: httpx.AsyncClient, settings_for: Callable[..., Settings]
) -> None:
    created = (await _create(api_client)).json()
    rows = await UserCredentials.select(UserCredentials.ciphertext, UserCredentials.key_id).run()
    keyring = load_keyring(settings_for())  # the key file the app generated
    assert rows[0]["key_id"] == keyring.primary_key_id
    assert PASSWORD.encode() not in rows[0]["ciphertext"]
    assert b"smtp.example.com" not in rows[0]["ciphertext"]
    assert await load_credential_data("mail", keyring) == SMTP
    assert await load_credential_data(uuid.UUID(created["id"]), keyring) == SMTP
    assert await load_credential_data(created["id"], keyring, expected_type="smtp") == SMTP


async def test_loading_a_credential_checks_its_name_and_type(
    api_client: httpx.AsyncClient, settings_for: Callable[..., Settings]
) -> None:
    await _create(api_client)
    keyring = load_keyring(settings_for())
    with pytest.raises(NotFoundError, match="'nope' not found"):
        await load_credential_data("nope", keyring)
    with pytest.raises(ValidationError, match="needs a 'api_key' credential"):
        await load_credential_data("mail", keyring, expected_type="api_key")


async def test_a_ciphertext_copied_to_another_credential_fails_to_decrypt(
    api_client: httpx.AsyncClient, settings_for: Callable[..., Settings]
) -> None:
    await _create(api_client, name="first")
    await _create(api_client, name="second", data={**SMTP, "password": "other"})
    (first,) = await UserCredentials.select(UserCredentials.ciphertext).where(
        UserCredentials.name == "first"
    )
    await UserCredentials.update({UserCredentials.ciphertext: first["ciphertext"]}).where(
        UserCredentials.name == "second"
    )
    with pytest.raises(SecretDecryptionError, match="moved from another row"):
        await load_credential_data("second", load_keyring(settings_for()))


async def test_show_and_list_never_include_the_data(api_client: httpx.AsyncClient) -> None:
    created = (await _create(api_client)).json()
    shown = await api_client.get(f"/api/v1/credentials/{created['id']}")
    assert shown.status_code == 200
    assert shown.json() == created
    listed = await api_client.get("/api/v1/credentials")
    assert listed.status_code == 200
    assert listed.json() == {"items": [created], "next_cursor": None}
    for response in (shown, listed):
        assert PASSWORD not in response.text
        assert "smtp.example.com" not in response.text


async def test_list_pages_by_name_with_a_cursor(api_client: httpx.AsyncClient) -> None:
    for name in ("charlie", "alpha", "bravo"):
        assert (await _create(api_client, name=name)).status_code == 201
    first = (await api_client.get("/api/v1/credentials", params={"limit": 2})).json()
    assert [item["name"] for item in first["items"]] == ["alpha", "bravo"]
    assert first["next_cursor"]
    second = await api_client.get(
        "/api/v1/credentials", params={"limit": 2, "cursor": first["next_cursor"]}
    )
    assert [item["name"] for item in second.json()["items"]] == ["charlie"]
    assert second.json()["next_cursor"] is None
    bad = await api_client.get("/api/v1/credentials", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400


async def test_unknown_credentials_answer_404(api_client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    for method in ("GET", "DELETE"):
        response = await api_client.request(method, f"/api/v1/credentials/{missing}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert str(missing) in response.json()["detail"]


async def test_delete_answers_204_then_the_credential_is_gone(
    api_client: httpx.AsyncClient,
) -> None:
    created = (await _create(api_client)).json()
    deleted = await api_client.delete(f"/api/v1/credentials/{created['id']}")
    assert deleted.status_code == 204
    assert (await api_client.get(f"/api/v1/credentials/{created['id']}")).status_code == 404
    assert await UserCredentials.count() == 0


async def test_a_duplicate_name_answers_409(api_client: httpx.AsyncClient) -> None:
    assert (await _create(api_client)).status_code == 201
    response = await _create(api_client, kind="basic_auth", data={"username": "u", "password": "p"})
    assert response.status_code == 409
    assert "'mail' already exists" in response.json()["detail"]


async def test_an_unknown_type_answers_422_listing_the_known_ones(
    api_client: httpx.AsyncClient,
) -> None:
    response = await _create(api_client, kind="carrier_pigeon")
    assert response.status_code == 422
    problems = _problems(response)
    assert set(problems) == {"type"}
    assert "smtp" in problems["type"]
    assert "oauth2_client_credentials" in problems["type"]


async def test_invalid_data_answers_422_naming_every_field_without_echoing_values(
    api_client: httpx.AsyncClient,
) -> None:
    data = {"port": "587", "security": "ssl", "password": PASSWORD, "passwort": PASSWORD}
    response = await _create(api_client, data=data)
    assert response.status_code == 422
    problems = _problems(response)
    assert set(problems) == {"data.host", "data.port", "data.security", "data.passwort"}
    assert "required" in problems["data.host"]
    assert "integer" in problems["data.port"]
    assert '"starttls"' in problems["data.security"]
    assert "allowed: host, password, port, security, username" in problems["data.passwort"]
    assert PASSWORD not in response.text
    assert "587" not in response.text
    assert await UserCredentials.count() == 0


async def test_nested_invalid_data_names_the_item(api_client: httpx.AsyncClient) -> None:
    data = {"token_url": "https://auth", "client_id": "c", "client_secret": "s", "scopes": [1]}
    response = await _create(api_client, kind="oauth2_client_credentials", data=data)
    assert response.status_code == 422
    assert _problems(response) == {"data.scopes[0]": "must be of type string"}


async def test_a_malformed_json_body_answers_400(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post(
        "/api/v1/credentials",
        content=b'{"name": "mail", "type": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": 7, "type": "smtp", "data": SMTP}, "name"),
        ({"name": "mail", "type": "smtp", "data": "host=x"}, "data"),
        ({"name": "mail", "type": "smtp"}, "data"),
        ({"name": "", "type": "smtp", "data": SMTP}, "name"),
        ({"name": " padded ", "type": "smtp", "data": SMTP}, "name"),
        ({"name": "mail", "type": "smtp", "data": SMTP, "secret": True}, "secret"),
    ],
)
async def test_wrong_types_answer_400_naming_the_field(
    api_client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await api_client.post("/api/v1/credentials", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert field in response.text
    assert PASSWORD not in response.text
