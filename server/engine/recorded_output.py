"""What a step records of an action's output: JSON data, whatever the action handed back. Pure.

By the time an action returns, its effect has happened (a message sent, a request answered).
Recording that outcome must therefore never fail in a way that makes the step run again:
anything JSON cannot hold is converted, never raised. `recordable(value)` keeps JSON data as it
is and turns the rest into the nearest JSON value: tuples and sets into lists, datetimes, UUIDs,
decimals and enums into their usual text (msgspec's), bytes into base64, structs and dataclasses
into objects, dict keys into strings, lone UTF-16 surrogates into U+FFFD, and any other object
(an `email` header, an exception) into its `str()`, nesting past MAX_DEPTH included. What it
returns is exactly what a later read of the record gives back, so later steps see the same
value whether the job that ran the step goes on or another one reads it from the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

MAX_DEPTH: Final = 32
_ENCODE_FAILURES: Final = (
    TypeError,
    ValueError,
    OverflowError,
    RecursionError,
    msgspec.EncodeError,
)


class RecordedOutput(msgspec.Struct, frozen=True, kw_only=True):
    """An output as JSON data, and the size of its JSON text in bytes."""

    data: Any
    size: int


def recordable(value: object) -> RecordedOutput:
    """`value` as JSON data; never raises for what it is given (see the module docstring)."""
    try:
        encoded = msgspec.json.encode(value)  # the usual case: JSON data already
    except _ENCODE_FAILURES:
        encoded = msgspec.json.encode(_converted(value, 0))
    return RecordedOutput(data=msgspec.json.decode(encoded), size=len(encoded))


def _converted(value: object, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):  # subclasses (an `IntEnum`, a custom type) as plain
        return int(value) if isinstance(value, int) else float(value)
    if isinstance(value, str):  # an `email` header is a str subclass msgspec refuses
        return _valid_text(str(value))
    if depth >= MAX_DEPTH:
        return _shown(value)
    if isinstance(value, Mapping):
        return {_key(key): _converted(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_converted(item, depth + 1) for item in value]
    try:  # datetimes, UUIDs, decimals, enums, bytes, structs, dataclasses; the rest as text
        builtin = msgspec.to_builtins(value, enc_hook=_shown)
    except _ENCODE_FAILURES:
        return _shown(value)
    return _converted(builtin, depth + 1)


def _key(key: object) -> str:
    return _shown(key)


def _shown(value: object) -> str:
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the recorded effect
        text = f"<{type(value).__name__}>"
    return _valid_text(text)


def _valid_text(text: str) -> str:
    """`text` with lone surrogates (which UTF-8 cannot carry) as U+FFFD; pairs are joined."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
