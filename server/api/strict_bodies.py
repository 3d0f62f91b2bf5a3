"""JSON request bodies are decoded strictly: a body that breaks its schema is a 400.

Litestar 2 converts a handler's `data` with msgspec's lax mode (`strict=False`, not
configurable), so `{"enabled": 0}` became `false` and `{"from_latest": "true"}` `true`: requests
the OpenAPI document calls invalid were accepted. This `before_request` hook, run after the
auth guard and before Litestar's own conversion, decodes a struct body once more with
`strict=True` and answers a 400 problem whose `errors` entry names the field by its path
(`steps[0].retry.max_attempts`), in the shape of every other invalid-field answer
(`server.errors.field_error`). An unknown or missing field is named with its own path and
the fields the object does take. A body that is not JSON is refused saying so; an empty one is
left to Litestar (for optional bodies).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException
from litestar.handlers import HTTPRouteHandler

from server.errors import field_error

# msgspec's messages: "<what> - at `$.steps[0].cfg`" and "Object contains unknown field `x`".
ERROR_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
NAMED_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<name>[^`]+)`")
BODY = "(body)"  # the field path of the body as a whole
PATH_PART = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


async def decode_body_strictly(request: Request[Any, Any, Any]) -> None:
    """Litestar `before_request` hook: refuse a struct body that does not fit its schema."""
    annotation = _struct_annotation(request.route_handler)
    if annotation is None:
        return
    body = await request.body()  # cached on the request: Litestar reads it again for free
    if not body.strip():
        return
    try:
        _strict_decoder(annotation).decode(body)
    except msgspec.ValidationError as error:
        field, message = describe(annotation, str(error))
        raise ClientException(
            detail=f"the body does not fit the schema of {request.method} "
            f"{request.scope.get('path_template', request.url.path)}: {field}: {message}",
            extra=[field_error(field, message, source="body")],
        ) from None
    except msgspec.DecodeError as error:
        raise ClientException(
            detail=f"the body is not valid JSON ({error}); send one JSON object "
            "with Content-Type: application/json",
            extra=[field_error(BODY, f"not valid JSON: {error}", source="body")],
        ) from None


def describe(annotation: Any, error: str) -> tuple[str, str]:
    """(field path, message) for a msgspec validation error against `annotation`."""
    located = ERROR_PATH.search(error)
    path = located.group("path") if located else ""
    message = error[: located.start()] if located else error
    named = NAMED_FIELD.match(message)
    if named is None:
        return _dotted(path) or BODY, message
    field = _dotted(f"{path}.{named.group('name')}")
    known = _fields_at(annotation, path)
    takes = f"; it takes: {', '.join(known)}" if known else ""
    if message.startswith("Object missing"):
        return field, f"is required{takes}"
    return field, f"is not a field of this object; remove it{takes}"


def _dotted(path: str) -> str:
    return path.removeprefix(".")


def _fields_at(annotation: Any, path: str) -> list[str]:
    """The field names of the object at `path` (`.steps[0].retry`) of `annotation`'s schema."""
    info: msgspec.inspect.Type | None = msgspec.inspect.type_info(annotation)
    for name, index in PATH_PART.findall(path):
        info = _step(info, name if not index else None)
        if info is None:
            return []
    struct = _member(info, msgspec.inspect.StructType)
    if not isinstance(struct, msgspec.inspect.StructType):
        return []
    return [field.encode_name for field in struct.fields]


def _step(info: msgspec.inspect.Type | None, name: str | None) -> msgspec.inspect.Type | None:
    """The type one path part (a field name, or an index when `name` is None) below `info`."""
    if name is None:
        sequence = _member(info, msgspec.inspect.ListType, msgspec.inspect.VarTupleType)
        if isinstance(sequence, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
            return sequence.item_type
        return None
    struct = _member(info, msgspec.inspect.StructType)
    if isinstance(struct, msgspec.inspect.StructType):
        return next((f.type for f in struct.fields if f.encode_name == name), None)
    mapping = _member(info, msgspec.inspect.DictType)
    return mapping.value_type if isinstance(mapping, msgspec.inspect.DictType) else None


def _member(info: msgspec.inspect.Type | None, *kinds: type) -> msgspec.inspect.Type | None:
    """`info` itself, or its union member of one of `kinds` (an optional struct, say)."""
    if isinstance(info, msgspec.inspect.UnionType):
        return next((t for t in info.types if isinstance(t, kinds)), None)
    return info if isinstance(info, kinds) else None


@cache
def _struct_annotation(handler: HTTPRouteHandler) -> Any:
    """The handler's `data` annotation when it is a msgspec struct (or optional), else None."""
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return None
    info = msgspec.inspect.type_info(data.annotation)
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    if not any(isinstance(member, msgspec.inspect.StructType) for member in members):
        return None
    return data.annotation


@cache
def _strict_decoder(annotation: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(annotation, strict=True)
