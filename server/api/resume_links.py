"""`/hooks/resume/{token}`: a waiting `wait_for_event` step's signed, single-use resume link.

Templates make these links with `resume_url('step')` (`server.runs.resume_links`), so an email
sent before the wait can carry them: `{{ resume_url('approval') }}?decision=approve`. Outside
API auth: the token is the credential (HMAC-signed execution id and step key,
`server.crypto.resume_tokens`); anyone holding the link can resume that step, once.

- `POST`: resumes the step with a payload made of the query string and the body (a JSON object
  or a form; the body's fields win over the query's, a field given several times is a list).
  202 `{"execution_id", "step_key", "resumed": true}`. A token that does not verify, a step
  resumed already (the link was used), skipped, or of an ended execution: 410 Gone. A step that
  has not begun waiting yet: 409 (try again shortly). A browser's form post (`Accept:
  text/html`) gets the same answers as a small page.
- `GET` (a person following the link from an email) changes nothing: it answers a small page
  with a button that POSTs to the same URL, query included, or the 410/409 answers. Mail
  scanners and link previewers fetch links with GET; if GET resumed the step, a scanner would
  approve (or reject) before the person read the mail. The page may not be framed (a hidden
  frame must not trick a click), cached, or sent on as a referrer.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import msgspec
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.enums import MediaType
from litestar.exceptions import ClientException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_410_GONE

from server.api.deps import DEPENDENCIES, Injected, Resources
from server.api.hooks import HOOKS_PREFIX
from server.api.problems import problem
from server.db.webhooks import RESERVED_FIRST_SEGMENT
from server.errors import ConflictError, GoneError
from server.runs.resume_links import resume_tokens
from server.runs.wait_resumes import link_state, resume_from_link
from server.triggers.bodies import MAX_FORM_FIELDS, BodyError, payload_of

log = structlog.get_logger(__name__)

RESUME_PREFIX: Final = f"{HOOKS_PREFIX}/{RESERVED_FIRST_SEGMENT}"
PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the URL is the credential
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
}


class Resumed(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: uuid.UUID
    step_key: str
    resumed: bool = True


class ResumeLinkController(Controller):
    path = RESUME_PREFIX
    opt: Mapping[str, str] = {"role": "public"}
    tags = ("hooks",)
    dependencies = DEPENDENCIES

    @post(
        "/{token:str}",
        status_code=HTTP_202_ACCEPTED,
        summary="Resume a waiting step through its signed link",
        description=__doc__,
        responses={
            HTTP_202_ACCEPTED: ResponseSpec(
                data_container=Resumed,
                description="Accepted: the step resumes with the payload (a browser's form post, "
                "`Accept: text/html`, gets a page instead)",
            ),
            HTTP_410_GONE: ResponseSpec(
                data_container=dict[str, Any],
                media_type="application/problem+json",
                description="Gone: the link was used already, its step no longer waits, or "
                "the token is not valid",
            ),
        },
        raises=[ClientException],
    )
    async def resume(
        self, token: FromPath[str], request: Request[Any, Any, Any], resources: Injected[Resources]
    ) -> Response[Any]:
        """Resume the step the link names, with the query and the body as its payload."""
        try:
            query = list(request.query_params.multi_items())
            payload = _payload(query, await request.body(), request)
        except BodyError as error:
            raise problem(HTTPStatus.BAD_REQUEST, str(error)) from None
        try:
            target = await resume_from_link(resume_tokens(resources.keyring), token, payload)
        except (GoneError, ConflictError) as error:
            if not _wants_page(request):
                raise
            return _page_for(error)
        log.info(
            "resume_link_used", execution_id=str(target.execution_id), step_key=target.step_key
        )
        if _wants_page(request):
            return _page(
                HTTPStatus.ACCEPTED, "Done", "Thank you: your answer was recorded. You can close "
                "this page.",
            )  # fmt: skip
        return Response(
            Resumed(execution_id=target.execution_id, step_key=target.step_key),
            status_code=HTTP_202_ACCEPTED,
        )

    @get(
        "/{token:str}",
        summary="The confirmation page of a resume link",
        description="A small HTML page with a button that POSTs to the same URL (the query "
        "included); it changes nothing, so mail scanners that fetch links cannot resume the "
        "step. 410 and 409 as the POST answers them (as a page for `Accept: text/html`).",
        media_type=MediaType.HTML,
        responses={
            HTTP_410_GONE: ResponseSpec(
                data_container=dict[str, Any],
                media_type="application/problem+json",
                description="Gone: the link was used already, its step no longer waits, or "
                "the token is not valid",
            )
        },
    )
    async def confirm(
        self, token: FromPath[str], request: Request[Any, Any, Any], resources: Injected[Resources]
    ) -> Response[str]:
        """A page with a button that POSTs to this URL (see the module docstring)."""
        try:
            step_key = await link_state(resume_tokens(resources.keyring), token)
        except (GoneError, ConflictError) as error:
            if not _wants_page(request):
                raise
            return _page_for(error)
        answers = "".join(
            f"<li><b>{html.escape(name)}</b>: {html.escape(value)}</li>"
            for name, value in request.query_params.multi_items()
        )
        shown = f" with:</p><ul>{answers}</ul>" if answers else ".</p>"
        body = (
            f"<p>This link answers the waiting step <b>{html.escape(step_key)}</b>{shown}"
            '<form method="post"><button type="submit">Confirm</button></form>'
        )
        return _page(HTTPStatus.OK, "Confirm", body, escaped=True)


def _payload(query: list[tuple[str, str]], body: bytes, request: Request[Any, Any, Any]) -> Any:
    """The query's fields, then the body's (a JSON object's or a form's) over them; a body that
    is not an object is kept under `body`."""
    if len(query) > MAX_FORM_FIELDS:
        raise BodyError(f"the query has over {MAX_FORM_FIELDS} fields")
    fields: dict[str, Any] = {}
    for name, value in query:
        known = fields.get(name)
        fields[name] = value if known is None else [*_listed(known), value]
    sent = payload_of(body, request.headers.get("content-type"))
    if isinstance(sent, dict):
        return {**fields, **sent}
    return {**fields, "body": sent}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wants_page(request: Request[Any, Any, Any]) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _page_for(error: Exception) -> Response[str]:
    if isinstance(error, GoneError):
        return _page(
            HTTPStatus.GONE, "Link no longer valid",
            "This link was used already, or what it answers no longer waits. Nothing was changed.",
        )  # fmt: skip
    return _page(HTTPStatus.CONFLICT, "Not yet", f"{error} Nothing was changed.")


def _page(status: HTTPStatus, title: str, body: str, *, escaped: bool = False) -> Response[str]:
    text = body if escaped else f"<p>{html.escape(body)}</p>"
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><meta name="robots" '
        f'content="noindex"><title>{html.escape(title)}</title></head><body>'
        f"<h1>{html.escape(title)}</h1>{text}</body></html>"
    )
    return Response(page, status_code=status.value, media_type=MediaType.HTML, headers=PAGE_HEADERS)
