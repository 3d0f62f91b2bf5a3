"""Contract-wide checks: every API path needs a token; no document makes the server fail."""

from __future__ import annotations

import re
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PLACEHOLDERS = {"int": "1", "uuid": "00000000-0000-0000-0000-000000000001", "str": "x", "path": "x"}


async def test_every_api_operation_refuses_requests_without_a_token(
    api_client: httpx.AsyncClient,
) -> None:
    schema = (await api_client.get("/schema/openapi.json")).json()
    api_client.headers.pop("Authorization")
    checked = 0
    for path, operations in schema["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            concrete = fill_path(path, operation)
            response = await api_client.request(method.upper(), concrete, json={})
            assert response.status_code == 401, (method, path, response.status_code)
            checked += 1
    assert checked >= 40


def fill_path(path: str, operation: dict[str, Any]) -> str:
    """`path` with each `{parameter}` replaced by a valid value."""
    return re.sub(r"\{(\w+)\}", lambda match: _placeholder(operation, match.group(1)), path)


def _placeholder(operation: dict[str, Any], name: str) -> str:
    """A syntactically valid value for a path parameter, from its schema."""
    for parameter in operation.get("parameters", []):
        if parameter["name"] == name:
            schema = parameter.get("schema", {})
            if schema.get("type") == "integer":
                return PLACEHOLDERS["int"]
            if schema.get("format") == "uuid":
                return PLACEHOLDERS["uuid"]
    return PLACEHOLDERS["str"]


def fifty_step_document() -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"key": "route", "kind": "condition", "cfg": {"cases": [
            {"branch": "big", "expression": "trigger.amount > 1000"},
            {"branch": "small", "expression": "trigger.amount > 0"},
        ]}},
    ]  # fmt: skip
    edges: list[dict[str, str]] = []
    for lane in ("big", "small", "default"):
        previous, branch = "route", lane
        for index in range(16 if lane != "default" else 17):
            key = f"{lane}_{index}"
            kind = "delay" if index == 8 else "action"
            step: dict[str, Any] = {"key": key, "kind": kind, "cfg": {"seconds": 1}}
            if kind == "action":
                step = {
                    "key": key,
                    "kind": "action",
                    "action_key": "transform",
                    "cfg": {"output": {"lane": lane, "i": index}},
                }
            steps.append(step)
            edges.append({"from": previous, "to": key, "branch_key": branch})
            previous, branch = key, "default"
    return {"name": "Fifty steps", "steps": steps, "edges": edges}


async def test_a_fifty_step_workflow_round_trips(api_client: httpx.AsyncClient) -> None:
    document = fifty_step_document()
    assert len(document["steps"]) == 50
    created = await api_client.post("/api/v1/workflows/import?publish=true", json=document)
    assert created.status_code == 201, created.text
    exported = (await api_client.get(f"/api/v1/workflows/{created.json()['id']}/export")).json()
    assert [s["key"] for s in exported["steps"]] == [s["key"] for s in document["steps"]]
    assert sorted(map(str, exported["edges"])) == sorted(map(str, document["edges"]))
    again = await api_client.post("/api/v1/workflows/import", json=exported)
    assert again.status_code == 201


KEYS = st.sampled_from(["a", "b", "c", "entry", "bad key", "", "x" * 120])
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
CFG = st.one_of(
    st.dictionaries(
        st.sampled_from(
            [
                "expression",
                "seconds",
                "until",
                "values",
                "output",
                "operation",
                "title",
                "url",
                "cases",
            ]
        ),
        VALUES,
        max_size=3,
    ),
    st.just({"expression": "trigger.x >"}),
    st.just({"values": {"a": "{{ trigger.name "}}),
)
STEPS = st.lists(
    st.fixed_dictionaries(
        {"key": KEYS, "kind": st.sampled_from(["action", "condition", "delay", "loop"])},
        optional={
            "action_key": st.sampled_from(["transform", "set_variables", "nope"]) | st.none(),
            "cfg": CFG,
            "name": st.text(max_size=5),
        },
    ),
    max_size=5,
)
EDGES = st.lists(
    st.fixed_dictionaries(
        {"from": KEYS, "to": KEYS},
        optional={"branch_key": st.sampled_from(["default", "true", "false", "error", "x"])},
    ),
    max_size=5,
)
DOCUMENTS = (
    st.fixed_dictionaries(
        {"name": st.text(max_size=30)},
        optional={
            "steps": STEPS,
            "edges": EDGES,
            "tags": st.lists(st.text(max_size=10), max_size=3),
            "variables": st.lists(
                st.fixed_dictionaries({"key": KEYS, "value": VALUES, "secret": st.booleans()}),
                max_size=3,
            ),
            "subscriptions": st.lists(
                st.fixed_dictionaries(
                    {"trigger_key": st.text(max_size=10), "filter_conditions": CFG}
                ),
                max_size=2,
            ),
            "extra": VALUES,
        },
    )
    | VALUES
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=DOCUMENTS, publish=st.booleans())
async def test_random_documents_import_or_answer_4xx_never_5xx(
    api_client: httpx.AsyncClient, document: Any, publish: bool
) -> None:
    response = await api_client.post(
        "/api/v1/workflows/import", params={"publish": str(publish).lower()}, json=document
    )
    assert response.status_code in (201, 400, 409, 413, 422), (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"


async def test_deeply_nested_json_is_a_400_not_a_500(api_client: httpx.AsyncClient) -> None:
    nested = b"[" * 5000 + b"]" * 5000
    response = await api_client.post(
        "/api/v1/events", content=nested, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_out_of_range_path_numbers_are_client_errors(api_client: httpx.AsyncClient) -> None:
    workflow = (await api_client.post("/api/v1/workflows", json={"name": "w"})).json()
    response = await api_client.get(f"/api/v1/workflows/{workflow['id']}/versions/99999999999999")
    assert response.status_code in (400, 404)
    assert "database" not in response.json()["detail"]


async def test_the_openapi_document_declares_problem_answers(api_client: httpx.AsyncClient) -> None:
    schema = (await api_client.get("/schema/openapi.json")).json()
    responses = schema["paths"]["/api/v1/workflows"]["post"]["responses"]
    for status in ("400", "401", "409", "422"):
        assert "application/problem+json" in responses[status]["content"]
    assert "ProblemDetails" in schema["components"]["schemas"]


async def test_an_id_that_is_not_a_uuid_answers_404_saying_what_an_id_looks_like(
    api_client: httpx.AsyncClient,
) -> None:
    response = await api_client.get("/api/v1/executions/123")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert "execution_id must be a UUID" in detail
    assert "POST /api/v1/events" in detail
    assert "/run" in detail
    workflow = (await api_client.post("/api/v1/workflows", json={"name": "w"})).json()
    steps = await api_client.get(f"/api/v1/workflows/{workflow['id']}/versions/1/steps/abc")
    assert "step_id must be a UUID" in steps.json()["detail"]
    version = await api_client.get(f"/api/v1/workflows/{workflow['id']}/versions/first")
    assert "version_num must be a whole number" in version.json()["detail"]
    cancel = await api_client.post("/api/v1/executions/not-an-id/cancel")
    assert (cancel.status_code, "execution_id must be a UUID" in cancel.json()["detail"]) == (
        404,
        True,
    )


async def test_an_unknown_path_still_answers_a_plain_404(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/api/v1/no-such-thing")
    assert (response.status_code, response.json()["detail"]) == (404, "Not Found")


async def test_the_openapi_document_says_a_malformed_path_id_is_a_404(
    api_client: httpx.AsyncClient,
) -> None:
    schema = (await api_client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/api/v1/executions/{execution_id}"]["get"]
    assert "not a UUID" in operation["responses"]["404"]["description"]
    (parameter,) = [p for p in operation["parameters"] if p["in"] == "path"]
    assert parameter["schema"] == {"type": "string", "format": "uuid"}
