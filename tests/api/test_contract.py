"""Contract-wide checks: every API path needs a token; no document makes the server fail."""

from __future__ import annotations

import itertools
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


TEXT = st.text(max_size=12) | st.sampled_from(["\x00", "a\x00b", "é", "{{ x }}", "x" * 300])


def _chain(keys: list[str], text: str) -> dict[str, Any]:
    """A well-formed workflow: transform steps joined in a chain, with some odd strings."""
    steps = [
        {"key": key, "kind": "action", "action_key": "transform", "cfg": {"output": {"v": text}}}
        for key in keys
    ]
    edges = [{"from": a, "to": b} for a, b in itertools.pairwise(keys)]
    return {"name": text or "w", "steps": steps, "edges": edges}


WELL_FORMED = st.builds(
    _chain,
    st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), min_size=1, max_size=6,
             unique=True),
    TEXT,
)  # fmt: skip


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=DOCUMENTS | WELL_FORMED, publish=st.booleans())
async def test_random_documents_import_or_answer_4xx_never_5xx(
    api_client: httpx.AsyncClient, document: Any, publish: bool
) -> None:
    response = await api_client.post(
        "/api/v1/workflows/import", params={"publish": str(publish).lower()}, json=document
    )
    assert response.status_code in (201, 400, 409, 413, 422), (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        return
    # An imported document exports with the same steps and edges.
    exported = await api_client.get(f"/api/v1/workflows/{response.json()['id']}/export")
    assert exported.status_code == 200, exported.text
    assert [s["key"] for s in exported.json()["steps"]] == [s["key"] for s in document["steps"]]


RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"name": "\\u0000"}', b'{"name": 1e999}']),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=RAW_BODIES)
async def test_random_bytes_posted_as_a_document_answer_4xx_never_5xx(
    api_client: httpx.AsyncClient, body: bytes
) -> None:
    response = await api_client.post(
        "/api/v1/workflows/import", content=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
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


async def test_options_lists_every_method_of_a_path(api_client: httpx.AsyncClient) -> None:
    for path, methods in [
        ("/api/v1/credentials", "GET, OPTIONS, POST"),
        ("/api/v1/schedules/" + PLACEHOLDERS["uuid"], "DELETE, GET, OPTIONS, PATCH"),
        ("/api/v1/workflows/" + PLACEHOLDERS["uuid"] + "/versions/1/steps", "GET, OPTIONS, POST"),
    ]:
        response = await api_client.options(path)
        assert response.status_code == 204, path
        assert response.headers["allow"] == methods, path
        refused = await api_client.put(path, json={})
        assert refused.status_code == 405
        assert sorted(refused.headers["allow"].split(", ")) == methods.split(", ")


async def test_a_body_value_of_the_wrong_json_type_is_a_400_naming_the_field(
    api_client: httpx.AsyncClient,
) -> None:
    for body in ({"name": "w", "is_active": 0}, {"name": "w", "tags": "a"}, {"name": 5}):
        response = await api_client.post("/api/v1/workflows", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == next(iter(set(body) - {"name"}), "name")
    assert (await api_client.get("/api/v1/workflows")).json()["items"] == []


async def test_the_openapi_document_states_what_the_decoder_enforces(
    api_client: httpx.AsyncClient,
) -> None:
    schema = (await api_client.get("/schema/openapi.json")).json()
    components, paths = schema["components"]["schemas"], schema["paths"]
    change = components["WorkflowChange"]
    assert change["additionalProperties"] is False
    assert change["properties"]["tags"]["oneOf"][0]["items"]["minLength"] == 1
    timeout = components["WebhookChange"]["properties"]["sync_timeout_seconds"]
    assert timeout["exclusiveMinimum"] == 0
    requeue = paths["/api/v1/jobs/{job_id}/requeue"]["post"]["parameters"][0]["schema"]
    assert requeue["maximum"] == 2**63 - 1
    assert (
        paths["/api/v1/workflows/{workflow_id}/versions"]["post"]["requestBody"]["required"]
        is False
    )
    links = paths["/api/v1/workflows"]["post"]["responses"]["201"]["links"]
    assert links["ApiV1WorkflowsWorkflowIdGetWorkflow"]["parameters"] == {
        "workflow_id": "$response.body#/id"
    }
    step_links = paths["/api/v1/workflows/{workflow_id}/versions/{version_num}/steps"]["post"][
        "responses"
    ]["201"]["links"]
    assert step_links["ApiV1WorkflowsWorkflowIdVersionsVersionNumStepsStepIdDeleteStep"][
        "parameters"
    ] == {
        "workflow_id": "$request.path.workflow_id",
        "version_num": "$request.path.version_num",
        "step_id": "$response.body#/id",
    }
    run_links = paths["/api/v1/workflows/{workflow_id}/run"]["post"]["responses"]["202"]["links"]
    assert run_links["ApiV1ExecutionsExecutionIdGetExecution"]["parameters"] == {
        "execution_id": "$response.body#/execution_id"
    }
    hook_answers = paths["/hooks/{path}"]["post"]["responses"]
    assert "application/problem+json" in hook_answers["404"]["content"]


async def test_an_out_of_range_export_version_is_refused_before_the_database(
    api_client: httpx.AsyncClient,
) -> None:
    workflow = (await api_client.post("/api/v1/workflows", json={"name": "w"})).json()
    for version in ("-876541116833438", "0", "2147483648"):
        response = await api_client.get(
            f"/api/v1/workflows/{workflow['id']}/export", params={"version": version}
        )
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["field"] == "version"


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


async def test_400_and_422_answers_list_invalid_fields_in_one_shape_with_their_paths(
    api_client: httpx.AsyncClient,
) -> None:
    """Unknown and missing fields, wrong types, bad query parameters and refused values: every
    `errors` entry is `{"field": <path>, "message", "source"?}`, and the detail says the same."""
    unknown = await api_client.post(
        "/api/v1/workflows/import",
        json={"name": "w", "steps": [{"key": "a", "kind": "action", "colour": "red"}]},
    )
    assert unknown.status_code == 400
    assert unknown.json()["errors"] == [
        {
            "field": "steps[0].colour",
            "message": "is not a field of this object; remove it; "
            "it takes: key, kind, name, action_key, cfg",
            "source": "body",
        }
    ]
    assert "steps[0].colour" in unknown.json()["detail"]

    missing = await api_client.post("/api/v1/workflows/import", json={"steps": []})
    assert missing.status_code == 400
    assert missing.json()["errors"][0]["field"] == "name"
    assert missing.json()["errors"][0]["message"].startswith("is required; it takes: name,")

    wrong_type = await api_client.post(
        "/api/v1/workflows/import", json={"name": "w", "steps": [{"key": 5, "kind": "action"}]}
    )
    assert wrong_type.json()["errors"] == [
        {"field": "steps[0].key", "message": "Expected `str`, got `int`", "source": "body"}
    ]

    not_json = await api_client.post(
        "/api/v1/workflows", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["detail"].startswith("the body is not valid JSON")
    assert not_json.json()["errors"][0]["field"] == "(body)"

    query = await api_client.get("/api/v1/workflows", params={"limit": "many"})
    assert query.status_code == 400
    assert query.json()["errors"] == [
        {"field": "limit", "message": "Expected `int`, got `str`", "source": "query"}
    ]
    assert query.json()["detail"] == "invalid query parameter limit: Expected `int`, got `str`"

    refused = await api_client.post(
        "/api/v1/workflows/import",
        json={"name": "w", "steps": [{"key": "a", "kind": "action", "action_key": "nope"}]},
    )
    assert refused.status_code == 422
    [entry] = refused.json()["errors"]
    assert entry["field"] == "steps[a].action_key"
    assert entry["message"].startswith("unknown action 'nope'")
    for answer in (unknown, missing, wrong_type, not_json, query, refused):
        assert answer.headers["content-type"] == "application/problem+json"
        for error in answer.json()["errors"]:
            assert set(error) <= {"field", "message", "source"}
            assert {"field", "message"} <= set(error)
