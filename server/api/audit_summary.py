"""What an audit entry says about a change: its target and a summary that never holds a secret.

The summary is built from the request itself, the same way for every audited route: the path
parameters, the query (but paging), and the body's top-level fields. A field that may carry a
secret or bulk data (`data`, `value`, `secret`, `auth`, `payload`, `input`, ...) is withheld
(shown as `[withheld]`); other values are kept when short scalars or short lists of them, or
described by their shape (`[object of 3]`). Every string found under a withheld field is then
redacted from the whole summary with the step-output redaction helper
(`server.engine.rendering.redact`), so a secret repeated in a kept field is hidden too. From
the answer only the ids of what was made are kept (`id`, `execution_id`, `event_id`, ...),
never the rest of it (a new token's answer carries the token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from server.engine.rendering import redact, secret_strings

WITHHELD: Final = "[withheld]"
WITHHELD_FIELDS: Final = frozenset(
    {
        "data", "value", "values", "secret", "secrets", "auth", "token", "password", "api_key",
        "payload", "input", "cfg", "registration", "generate_secret",
    }
)  # fmt: skip
PAGING_PARAMETERS: Final = frozenset({"limit", "cursor"})
MADE_ID_FIELDS: Final = ("id", "execution_id", "event_id")
KEY_FIELDS: Final = ("key", "trigger_key")
RESULT_ID_FIELDS: Final = (*MADE_ID_FIELDS, "execution_ids", "version_num", *KEY_FIELDS)
MAX_TEXT: Final = 200
MAX_LIST: Final = 20


def target_of(
    action: str, path_params: Mapping[str, object], result: Mapping[str, Any]
) -> tuple[str, str | None]:
    """(target type, target id) of `action` (`<type>.<verb>`): the `<type>_id` path parameter,
    else the id of what the call made, else the path parameters joined by `/`, ending with the
    key the call wrote (a variable's `key`, a trigger's `trigger_key`) when it is not one."""
    target_type = action.partition(".")[0]
    if (named := path_params.get(f"{target_type}_id")) is not None:
        return target_type, str(named)
    for field in MADE_ID_FIELDS:
        if isinstance(result.get(field), str):
            return target_type, str(result[field])
    parts = [str(value) for value in path_params.values()]
    for field in KEY_FIELDS:
        if isinstance(key := result.get(field), str) and key not in parts:
            parts.append(key)
    return target_type, "/".join(parts) or None


def summarize(
    *,
    path_params: Mapping[str, object],
    query: Mapping[str, str],
    body: bytes,
    result: Mapping[str, Any],
    notes: Mapping[str, Any],
) -> dict[str, Any]:
    """The summary of one call (see the module docstring); `notes` are added by the handler."""
    fields, secrets = _body_fields(body)
    summary: dict[str, Any] = {}
    if path_params:
        summary["path"] = {key: str(value) for key, value in path_params.items()}
    kept_query = {k: v for k, v in query.items() if k not in PAGING_PARAMETERS}
    if kept_query:
        summary["query"] = kept_query
    if fields:
        summary["body"] = fields
    made = {field: result[field] for field in RESULT_ID_FIELDS if field in result}
    if made:
        summary["result"] = made
    summary.update(notes)
    redacted: dict[str, Any] = redact(summary, secrets)
    return redacted


def decode_object(raw: bytes) -> dict[str, Any]:
    """`raw` as a JSON object, or {} when it is empty, not JSON or not an object."""
    if not raw.strip():
        return {}
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _body_fields(body: bytes) -> tuple[dict[str, Any], set[str]]:
    decoded = decode_object(body)
    fields: dict[str, Any] = {}
    secrets: set[str] = set()
    for key, value in decoded.items():
        if key in WITHHELD_FIELDS:
            fields[key] = WITHHELD
            secrets |= secret_strings([value])
        else:
            fields[key] = _described(value)
    return fields, secrets


def _described(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "..."
    if value is None or isinstance(value, bool | int | float):
        return value
    if (
        isinstance(value, list)
        and len(value) <= MAX_LIST
        and all(isinstance(item, str) and len(item) <= MAX_TEXT for item in value)
    ):
        return value
    kind = "object" if isinstance(value, dict) else "list"
    return f"[{kind} of {len(value)}]"
