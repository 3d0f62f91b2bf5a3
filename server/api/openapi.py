"""The OpenAPI document declares the problem-detail answers every API operation can give.

Handlers raise problems from many layers (auth guard, validation, domain errors), so instead of
listing them on each handler the document is completed once, when the app is built: every
`/api/v1` operation gets the 4xx/5xx answers the API uses, each `application/problem+json`
with one shared schema. Schema-driven clients and conformance checkers then know every answer.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Final

import msgspec
from litestar import Litestar
from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins.struct import (
    StructSchemaPlugin as LitestarStructSchemaPlugin,
)
from litestar.openapi.spec import (
    Link,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from server.api.hooks import HOOKS_PREFIX
from server.api.routes import API_PREFIX

PROBLEM_SCHEMA_NAME: Final = "ProblemDetails"
PROBLEM_STATUSES: Final = (
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.UNAUTHORIZED,
    HTTPStatus.NOT_FOUND,
    HTTPStatus.CONFLICT,
    HTTPStatus.PRECONDITION_FAILED,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    HTTPStatus.UNPROCESSABLE_ENTITY,
    HTTPStatus.INTERNAL_SERVER_ERROR,
    HTTPStatus.NOT_IMPLEMENTED,
    HTTPStatus.SERVICE_UNAVAILABLE,
)
PROBLEM_SCHEMA: Final = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details; `errors` lists invalid fields when there are any",
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "errors": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
    },
    required=["status", "title"],
)


def declare_problem_responses(document: OpenAPI) -> None:
    """Add the problem answers to every `/api/v1` and `/hooks` operation of `document` (in place)."""
    if document.components.schemas is None:
        document.components.schemas = {}
    document.components.schemas[PROBLEM_SCHEMA_NAME] = PROBLEM_SCHEMA
    content = {
        "application/problem+json": OpenAPIMediaType(
            schema=Reference(ref=f"#/components/schemas/{PROBLEM_SCHEMA_NAME}")
        )
    }
    for path, item in (document.paths or {}).items():
        if not path.startswith((API_PREFIX, HOOKS_PREFIX)):
            continue
        for method in ("get", "post", "put", "patch", "delete"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            responses = operation.responses if operation.responses is not None else {}
            for status in PROBLEM_STATUSES:
                responses[str(status.value)] = OpenAPIResponse(
                    description=status.phrase, content=content
                )
            operation.responses = responses


def optional_bodies(app: Litestar) -> None:
    """Mark a request body optional where the handler takes none (`data: X | None = None`).

    Litestar 2 declares every request body required.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        item = (app.openapi_schema.paths or {}).get(re.sub(r":\w+\}", "}", route.path))
        for method, (handler, _) in route.route_handler_map.items():
            data = handler.parsed_fn_signature.parameters.get("data")
            operation = getattr(item, method.lower(), None) if item is not None else None
            body = operation.request_body if operation is not None else None
            if data is not None and data.is_optional and isinstance(body, RequestBody):
                body.required = False


def link_created_resources(document: OpenAPI) -> None:
    """Declare OpenAPI links from each create operation to the operations on what it created.

    A `POST P` that answers 201 with a body naming the new resource links to every operation
    under `P/{param}` that needs no other parameter: the parameter takes the answer's field of the same name (`key`,
    `trigger_key`), or its `id` for a `*_id` parameter; the path parameters `P` already has are
    passed on as they were. Clients and stateful fuzzers can then follow create -> read ->
    update -> delete without guessing which field feeds which parameter.
    """
    paths = document.paths or {}
    schemas = document.components.schemas or {}
    for path, item in paths.items():
        created = _created_fields(item.post, schemas)
        if not created:
            continue
        for target_path, target in paths.items():
            parameter = _child_parameter(path, target_path)
            if parameter is None:
                continue
            field = parameter if parameter in created else None
            if field is None and parameter.endswith("_id") and "id" in created:
                field = "id"
            if field is None:
                continue
            inherited = {name: f"$request.path.{name}" for name in _path_parameters(path)}
            if set(_path_parameters(target_path)) != {*inherited, parameter}:
                continue  # the answer and the request do not name every parameter it needs
            for method in ("get", "put", "patch", "delete", "post"):
                operation = getattr(target, method, None)
                if operation is None or operation.operation_id is None:
                    continue
                answer = (item.post.responses or {})["201"]  # type: ignore[union-attr]
                if not isinstance(answer, OpenAPIResponse):
                    continue
                links = answer.links if answer.links is not None else {}
                links[operation.operation_id] = Link(
                    operation_id=operation.operation_id,
                    parameters={**inherited, parameter: f"$response.body#/{field}"},
                )
                answer.links = links


def link_named_fields(document: OpenAPI) -> None:
    """Declare links from every answer that names a resource by a field such as `execution_id`
    to the operations on `.../{execution_id}` that need nothing else (`POST .../run` -> `GET
    /executions/{execution_id}`, a version's `workflow_id` -> `GET /workflows/{workflow_id}`)."""
    paths = document.paths or {}
    schemas = document.components.schemas or {}
    targets = [
        (params[0], operation)
        for path, item in paths.items()
        if len(params := _path_parameters(path)) == 1 and params[0].endswith("_id")
        for method in ("get", "put", "patch", "delete", "post")
        if (operation := getattr(item, method, None)) is not None and operation.operation_id
    ]
    for item in paths.values():
        for method in ("get", "put", "patch", "delete", "post"):
            source = getattr(item, method, None)
            for status, answer in (source.responses or {}).items() if source is not None else []:
                fields = _answer_fields(answer, schemas) if status.startswith("2") else set()
                for parameter, target in targets:
                    if parameter not in fields or not isinstance(answer, OpenAPIResponse):
                        continue
                    links = answer.links if answer.links is not None else {}
                    links.setdefault(
                        str(target.operation_id),
                        Link(
                            operation_id=target.operation_id,
                            parameters={parameter: f"$response.body#/{parameter}"},
                        ),
                    )
                    answer.links = links


def _created_fields(operation: Operation | None, schemas: dict[str, Schema]) -> frozenset[str]:
    """The body fields of `operation`'s 201 answer, when it has one that is a component."""
    if operation is None or operation.responses is None:
        return frozenset()
    return _answer_fields(operation.responses.get("201"), schemas)


def _answer_fields(answer: object, schemas: dict[str, Schema]) -> frozenset[str]:
    """The JSON body fields of `answer`, when its schema is a component."""
    if not isinstance(answer, OpenAPIResponse) or not answer.content:
        return frozenset()
    media = answer.content.get("application/json")
    reference = media.schema if media is not None else None
    if not isinstance(reference, Reference):
        return frozenset()
    schema = schemas.get(reference.ref.rsplit("/", 1)[-1])
    return frozenset(schema.properties or {}) if schema is not None else frozenset()


def _child_parameter(parent: str, path: str) -> str | None:
    """`name` when `path` is `parent/{name}` or lies under it."""
    match = re.fullmatch(re.escape(parent) + r"/\{(\w+)\}(?:/.*)?", path)
    return match.group(1) if match else None


def _path_parameters(path: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", path)


# Litestar writes numeric bounds as floats, so 2**63 - 1 (a bigint id's upper bound) becomes
# 9.223372036854776e18, which is 2**63: a schema-valid id the API then refuses. Integer schemas
# get their bounds back as exact integers; this one is the only bound above 2**53 the API uses.
BIGINT_MAX: Final = 2**63 - 1


def exact_integer_bounds(document: OpenAPI) -> None:
    """Write every integer parameter's bounds as integers (in place)."""
    for item in (document.paths or {}).values():
        for method in ("get", "put", "patch", "delete", "post"):
            operation = getattr(item, method, None)
            for parameter in (operation.parameters or []) if operation is not None else []:
                schema = getattr(parameter, "schema", None)
                if isinstance(schema, Schema) and schema.type == OpenAPIType.INTEGER:
                    _make_exact(schema)


def _make_exact(schema: Schema) -> None:
    for bound in ("maximum", "minimum", "exclusive_maximum", "exclusive_minimum"):
        value = getattr(schema, bound)
        if isinstance(value, float) and value.is_integer():
            exact = BIGINT_MAX if value == float(BIGINT_MAX) else int(value)
            setattr(schema, bound, exact)


class StructSchemaPlugin(LitestarStructSchemaPlugin):
    """Litestar's msgspec schemas, plus two rules the decoder enforces that Litestar leaves out.

    - A struct with `forbid_unknown_fields` refuses other fields: `additionalProperties: false`.
    - The constraints of a list's items (`list[Tag]`, each 1 to 50 characters) are kept.

    Registered before Litestar's own plugin (`server.app`), so it handles every struct.
    """

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if not isinstance(info, msgspec.inspect.StructType):
            return schema
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        for field in info.fields:
            prop = (schema.properties or {}).get(field.encode_name)
            if not isinstance(prop, Schema):
                continue
            _keep_number_bounds(field.type, prop)
            items = _constrained_string_items(field.type)
            for variant in [prop, *(prop.one_of or [])] if items is not None else []:
                if isinstance(variant, Schema) and variant.type == OpenAPIType.ARRAY:
                    variant.items = items
        return schema


def _variants(kind: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    """The types a field accepts, without their `Meta` wrappers."""
    if isinstance(kind, msgspec.inspect.Metadata):
        return _variants(kind.type)
    if isinstance(kind, msgspec.inspect.UnionType):
        return [v for member in kind.types for v in _variants(member)]
    return [kind]


def _keep_number_bounds(kind: msgspec.inspect.Type, prop: Schema) -> None:
    """Put back a number's bounds that Litestar drops (`gt=0` on an optional field)."""
    variants = _variants(kind)
    for variant in variants:
        if isinstance(variant, msgspec.inspect.IntType | msgspec.inspect.FloatType):
            for bound, name in (
                ("gt", "exclusive_minimum"),
                ("ge", "minimum"),
                ("lt", "exclusive_maximum"),
                ("le", "maximum"),
            ):
                value = getattr(variant, bound)
                if value is not None and getattr(prop, name) is None:
                    setattr(prop, name, value)


def _constrained_string_items(kind: msgspec.inspect.Type) -> Schema | None:
    """The items schema of a list of constrained strings (a union with UNSET or None too)."""
    variants = _variants(kind)
    for variant in variants:
        if isinstance(variant, msgspec.inspect.ListType) and isinstance(
            variant.item_type, msgspec.inspect.StrType
        ):
            item = variant.item_type
            if item.min_length is None and item.max_length is None and item.pattern is None:
                return None
            return Schema(
                type=OpenAPIType.STRING,
                min_length=item.min_length,
                max_length=item.max_length,
                pattern=item.pattern,
            )
    return None
