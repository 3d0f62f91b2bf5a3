"""What an inbound webhook body becomes: the event payload workflows see as `trigger`.

The body is parsed only after its signature was checked on the raw bytes. By content type:

- JSON (`application/json`, or any `application/<name>+json`): the parsed value, as sent
  (usually an object; arrays and scalars are kept as they are).
- Form (`application/x-www-form-urlencoded`): an object of field name -> value (strings); a
  field sent several times -> a list of its values in order. `a=1&a=2&b=` ->
  `{"a": ["1", "2"], "b": ""}`.
- An empty body, whatever its type: `{}`.
- Anything else (text, XML, multipart, binary): stored as received, as
  `{"content_type": "<the Content-Type header>", "body": "<text>"}` when the bytes are UTF-8,
  else `{"content_type": ..., "body_base64": "<base64>"}`. No Content-Type header reads as
  `application/octet-stream`.

Pure: bytes and a header value in, a JSON-ready value out, `BodyError` for a body that claims
a type it does not have.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl

import msgspec

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
DEFAULT_TYPE = "application/octet-stream"
MAX_FORM_FIELDS = 1000


class BodyError(ValueError):
    """The body does not parse as the content type it declares; the message says why."""


def media_type(content_type: str | None) -> str:
    """The lower-case media type of a Content-Type header, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def payload_of(body: bytes, content_type: str | None) -> Any:
    """The payload for `body` sent with the `content_type` header (see the module docstring).

    Raises:
        BodyError: a JSON body that is not valid JSON, or a form body that is not UTF-8
            URL-encoding.
    """
    if not body:
        return {}
    kind = media_type(content_type)
    if kind == JSON_TYPE or (kind.startswith("application/") and kind.endswith("+json")):
        try:
            return msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError) as error:
            raise BodyError(f"the body is not valid JSON ({error}); send valid JSON") from None
    if kind == FORM_TYPE:
        return _form_fields(body)
    declared = content_type or DEFAULT_TYPE
    try:
        return {"content_type": declared, "body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"content_type": declared, "body_base64": base64.b64encode(body).decode()}


def _form_fields(body: bytes) -> dict[str, str | list[str]]:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as error:
        reason = "not UTF-8" if isinstance(error, UnicodeDecodeError) else str(error)
        raise BodyError(f"the form body cannot be read ({reason}); send UTF-8 form data") from None
    fields: dict[str, str | list[str]] = {}
    for name, value in pairs:
        known = fields.get(name)
        if known is None:
            fields[name] = value
        elif isinstance(known, list):
            known.append(value)
        else:
            fields[name] = [known, value]
    return fields
