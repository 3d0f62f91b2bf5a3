"""The OpenAPI document states the role each operation requires (`server.access`).

Completed once when the app is built, from each handler's declared `opt["role"]`: the
operation gets an `x-required-role` extension and a line at the end of its description
(`Required role: operator (granted to admin, operator).`), and `403` joins its problem answers
when a token can be refused for its role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Final

from litestar import Litestar
from litestar.openapi.spec import Operation
from litestar.routes import HTTPRoute

from server.access import GRANTED_TO, PUBLIC
from server.api.auth import required_role

EXTENSION: Final = "x-required-role"


@dataclass
class RoleOperation(Operation):
    """An operation with the `x-required-role` extension (Litestar's spec has no extensions)."""

    required_role: str | None = field(default=None, metadata={"alias": EXTENSION})


def declare_required_roles(app: Litestar) -> None:
    """Write each operation's required role into the app's OpenAPI document (in place)."""
    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        item = paths.get(re.sub(r":\w+\}", "}", route.path))
        if item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, method.lower(), None)
            role = required_role(handler)
            if operation is None or role is None:
                continue
            values = {f.name: getattr(operation, f.name) for f in fields(operation)}
            values["required_role"] = role
            values["description"] = _described(operation.description, role)
            setattr(item, method.lower(), RoleOperation(**values))


def _described(description: str | None, role: str) -> str:
    if role == PUBLIC:
        line = "Required role: none (public)."
    else:
        line = f"Required role: {role} (granted to {', '.join(sorted(GRANTED_TO[role]))})."
    return f"{description}\n\n{line}" if description else line
