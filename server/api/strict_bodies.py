"""JSON request bodies are decoded strictly: a body that breaks its schema is a 400.

Litestar 2 converts a handler's `data` with msgspec's lax mode (`strict=False`, not
configurable), so `{"enabled": 0}` became `false` and `{"from_latest": "true"}` `true`: requests
the OpenAPI document calls invalid were accepted. This `before_request` hook, run after the
auth guard and before Litestar's own conversion, decodes a struct body once more with
`strict=True` and answers a 400 problem naming the field, in the shape Litestar gives its own
validation errors. Bodies that are not JSON, or empty, are left to Litestar as before.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler

ERROR_PATH = re.compile(r"`\$\.(.+)`$")


async def decode_body_strictly(request: Request[Any, Any, Any]) -> None:
    """Litestar `before_request` hook: refuse a struct body whose JSON types do not match."""
    decoder = _strict_decoder(request.route_handler)
    if decoder is None:
        return
    body = await request.body()  # cached on the request: Litestar reads it again for free
    if not body.strip():
        return
    try:
        decoder.decode(body)
    except msgspec.ValidationError as error:
        # Litestar's own shape: the message without its path, the field as `key`.
        located = ERROR_PATH.search(str(error))
        raise ValidationException(
            detail=f"Validation failed for {request.method} {request.url.path}",
            extra=[
                {
                    "message": str(error).split(" - ", maxsplit=1)[0],
                    "key": located.group(1) if located else "data",
                    "source": "body",
                }
            ],
        ) from None
    except msgspec.DecodeError:
        return  # not JSON: Litestar answers its own 400


@cache
def _strict_decoder(handler: HTTPRouteHandler) -> msgspec.json.Decoder[Any] | None:
    """A strict decoder for the handler's `data`, when that is a msgspec struct (or optional)."""
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return None
    info = msgspec.inspect.type_info(data.annotation)
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    if not any(isinstance(member, msgspec.inspect.StructType) for member in members):
        return None
    return msgspec.json.Decoder(data.annotation, strict=True)
