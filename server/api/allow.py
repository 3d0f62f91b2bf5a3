"""`OPTIONS` answers list every method of a path, not only those of its first handler.

Litestar 2 builds each route's automatic OPTIONS handler with the route that first held the
path; when more handlers join the path (a controller's `GET /` and `POST /`, a router
registered in the app) the route is rebuilt but keeps that OPTIONS handler, whose `Allow` then
names only the first methods (litestar-org/litestar#4169, fixed in Litestar 3 only). The 405
answers are right. Once the app is built, each automatic OPTIONS handler is given the final
route's methods.
"""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar, Response
from litestar.enums import MediaType
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.types import Scope

LITESTAR_OPTIONS_HANDLER = "options_handler"


def answer_options_with_every_method(app: Litestar) -> None:
    """Make every automatic OPTIONS answer list all the methods of its path (in place)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        if handler.handler_name != LITESTAR_OPTIONS_HANDLER:
            continue  # an OPTIONS handler of our own answers for itself
        handler._fn = _options_handler(", ".join(sorted(route.methods)))  # type: ignore[assignment]


def _options_handler(allow: str) -> Callable[[Scope], Response[None]]:
    """Litestar's OPTIONS handler (same signature, same answer) with a fixed `Allow`."""

    def options_handler(scope: Scope) -> Response[None]:
        return Response(
            content=None,
            status_code=HTTP_204_NO_CONTENT,
            headers={"Allow": allow},
            media_type=MediaType.TEXT,
        )

    return options_handler
