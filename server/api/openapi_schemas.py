"""OpenAPI schemas that say what the decoder enforces, where Litestar 2's generation does not.

Litestar leaves out `forbid_unknown_fields`, the constraints of list items and some number
bounds (`gt=0` on an optional field), writes bounds as floats (2**63 - 1 becomes 2**63), and
declares every request body required. Each function here puts one of those back; `server.app`
applies them when the app is built.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec
from litestar import Litestar
from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins.struct import (
    StructSchemaPlugin as LitestarStructSchemaPlugin,
)
from litestar.openapi.spec import OpenAPI, OpenAPIType, RequestBody, Schema
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition


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
    """Litestar's msgspec schemas, plus the rules the decoder enforces that Litestar leaves out.

    - A struct with `forbid_unknown_fields` refuses other fields: `additionalProperties: false`.
    - The constraints of a list's items (`list[Tag]`, each 1 to 50 characters) are kept.
    - A number's bounds are kept when Litestar drops them (`gt=0` on an optional field).

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
