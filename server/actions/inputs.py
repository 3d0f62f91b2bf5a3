"""An action's inputs (its rendered cfg, a credential's fields) as typed, frozen structs.

Templates render to strings, so conversion is lax (`"30"` becomes `30.0` for a number field);
unknown keys, such as the step's `retry` policy, are ignored. A value that does not fit cannot
get better on retry, so it raises `PermanentError` naming the field (`... at $.to`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from server.queue.jobs import PermanentError

T = TypeVar("T")


def typed_input(data: dict[str, Any], kind: type[T], what: str) -> T:
    """`data` as a `kind`; `what` names it in the error (`"email cfg"`, `"credential 'x'"`)."""
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as error:
        raise PermanentError(f"{what} is invalid: {error}") from None
