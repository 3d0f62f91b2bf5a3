"""The OpenAPI document declares the problem-detail answers every API operation can give.

Handlers raise problems from many layers (auth guard, validation, domain errors), so instead of
listing them on each handler the document is completed once, when the app is built: every
`/api/v1` and `/hooks` operation gets the 4xx/5xx answers the API uses, each `application/problem+json`
with one shared schema. Schema-driven clients and conformance checkers then know every answer.
`server.api.openapi_schemas` and `server.api.openapi_links` complete the rest of the document.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
)

from server.api.hooks import HOOKS_PREFIX
from server.api.routes import API_PREFIX

PROBLEM_SCHEMA_NAME: Final = "ProblemDetails"
PROBLEM_STATUSES: Final = (
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.UNAUTHORIZED,
    HTTPStatus.FORBIDDEN,
    HTTPStatus.NOT_FOUND,
    HTTPStatus.CONFLICT,
    HTTPStatus.PRECONDITION_FAILED,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    HTTPStatus.UNPROCESSABLE_ENTITY,
    HTTPStatus.INTERNAL_SERVER_ERROR,
    HTTPStatus.SERVICE_UNAVAILABLE,
)
NOT_FOUND_WITH_PARAMETERS: Final = (
    "Not Found: no such resource, or a path parameter of the wrong form (an id that is not a "
    "UUID, a version that is not a whole number); the detail names the parameter"
)
PROBLEM_SCHEMA: Final = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details; `errors` lists invalid fields when there are any",
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            description="each invalid field, for 400 and 422 alike",
            items=Schema(
                type=OpenAPIType.OBJECT,
                properties={
                    "field": Schema(
                        type=OpenAPIType.STRING,
                        description="the field's path, e.g. `steps[0].cfg.url` or `limit`; "
                        "`(body)` for the body as a whole",
                    ),
                    "message": Schema(type=OpenAPIType.STRING),
                    "source": Schema(
                        type=OpenAPIType.STRING,
                        enum=["body", "query", "path", "header", "cookie"],
                        description="where the field was, when the request's parsing found it",
                    ),
                },
                required=["field", "message"],
            ),
        ),
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
                description = status.phrase
                if status is HTTPStatus.NOT_FOUND and "{" in path:
                    description = NOT_FOUND_WITH_PARAMETERS
                responses[str(status.value)] = OpenAPIResponse(
                    description=description, content=content
                )
            operation.responses = responses
