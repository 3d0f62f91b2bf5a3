"""OpenAPI links: which answer field feeds which parameter of which operation.

Declared once when the app is built, from the document itself (no list to keep in step with
the controllers): clients and stateful fuzzers follow create -> read -> update -> delete, and
run -> execution, without guessing.
"""

from __future__ import annotations

import re

from litestar.openapi.spec import Link, OpenAPI, OpenAPIResponse, Operation, Reference, Schema


def link_created_resources(document: OpenAPI) -> None:
    """Declare OpenAPI links from each create operation to the operations on what it created.

    A `POST P` that answers 201 with a body naming the new resource links to every operation
    under `P/{param}` that needs no other parameter: the parameter takes the answer's field of the same name (`key`,
    `trigger_key`), or its `id` for a `*_id` parameter; the path parameters `P` already has are
    passed on as they were. Clients and stateful fuzzers can then follow create -> read ->
    update -> delete without guessing which field feeds which parameter.
    """
    paths = document.paths or {}
    schemas = document.components.schemas or {}
    for path, item in paths.items():
        created = _created_fields(item.post, schemas)
        if not created:
            continue
        for target_path, target in paths.items():
            parameter = _child_parameter(path, target_path)
            if parameter is None:
                continue
            field = parameter if parameter in created else None
            if field is None and parameter.endswith("_id") and "id" in created:
                field = "id"
            if field is None:
                continue
            inherited = {name: f"$request.path.{name}" for name in _path_parameters(path)}
            if set(_path_parameters(target_path)) != {*inherited, parameter}:
                continue  # the answer and the request do not name every parameter it needs
            for method in ("get", "put", "patch", "delete", "post"):
                operation = getattr(target, method, None)
                if operation is None or operation.operation_id is None:
                    continue
                answer = (item.post.responses or {})["201"]  # type: ignore[union-attr]
                if not isinstance(answer, OpenAPIResponse):
                    continue
                links = answer.links if answer.links is not None else {}
                links[operation.operation_id] = Link(
                    operation_id=operation.operation_id,
                    parameters={**inherited, parameter: f"$response.body#/{field}"},
                )
                answer.links = links


def link_named_fields(document: OpenAPI) -> None:
    """Declare links from every answer that names a resource by a field such as `execution_id`
    to the operations on `.../{execution_id}` that need nothing else (`POST .../run` -> `GET
    /executions/{execution_id}`, a version's `workflow_id` -> `GET /workflows/{workflow_id}`)."""
    paths = document.paths or {}
    schemas = document.components.schemas or {}
    targets = [
        (params[0], operation)
        for path, item in paths.items()
        if len(params := _path_parameters(path)) == 1 and params[0].endswith("_id")
        for method in ("get", "put", "patch", "delete", "post")
        if (operation := getattr(item, method, None)) is not None and operation.operation_id
    ]
    for item in paths.values():
        for method in ("get", "put", "patch", "delete", "post"):
            source = getattr(item, method, None)
            for status, answer in (source.responses or {}).items() if source is not None else []:
                fields = _answer_fields(answer, schemas) if status.startswith("2") else set()
                for parameter, target in targets:
                    if parameter not in fields or not isinstance(answer, OpenAPIResponse):
                        continue
                    links = answer.links if answer.links is not None else {}
                    links.setdefault(
                        str(target.operation_id),
                        Link(
                            operation_id=target.operation_id,
                            parameters={parameter: f"$response.body#/{parameter}"},
                        ),
                    )
                    answer.links = links


def _created_fields(operation: Operation | None, schemas: dict[str, Schema]) -> frozenset[str]:
    """The body fields of `operation`'s 201 answer, when it has one that is a component."""
    if operation is None or operation.responses is None:
        return frozenset()
    return _answer_fields(operation.responses.get("201"), schemas)


def _answer_fields(answer: object, schemas: dict[str, Schema]) -> frozenset[str]:
    """The JSON body fields of `answer`, when its schema is a component."""
    if not isinstance(answer, OpenAPIResponse) or not answer.content:
        return frozenset()
    media = answer.content.get("application/json")
    reference = media.schema if media is not None else None
    if not isinstance(reference, Reference):
        return frozenset()
    schema = schemas.get(reference.ref.rsplit("/", 1)[-1])
    return frozenset(schema.properties or {}) if schema is not None else frozenset()


def _child_parameter(parent: str, path: str) -> str | None:
    """`name` when `path` is `parent/{name}` or lies under it."""
    match = re.fullmatch(re.escape(parent) + r"/\{(\w+)\}(?:/.*)?", path)
    return match.group(1) if match else None


def _path_parameters(path: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", path)
