"""One call to a webhook sender's API, as the registration providers make them.

Every call goes through the outbound address guard (`server.actions.guarded_http`: private
addresses refused unless HTTP_ALLOWED_HOSTS allows them; redirects checked hop by hop), within
REGISTRATION_CALL_TIMEOUT_SECONDS. Answers are JSON or nothing. Any failure (transport, guard,
an error status, an answer that is not JSON) becomes a `SenderCallError` whose message names the
call (method and URL without its query) and the sender's answer, with every secret this pass
knows (the endpoint's secrets, the credential's values) replaced by `[redacted]`: these
messages become the registration's `last_error` and log lines.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import httpx
import msgspec

from server.actions.guarded_http import (
    OutboundClient,
    OutboundRequest,
    OutboundResponse,
    status_failure,
)
from server.engine.rendering import redact
from server.errors import AppError

MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024
USER_AGENT: Final = "Switchyard"


class SenderCallError(AppError):
    """A call to the sender failed; the message is safe to store and show."""


class SenderCalls:
    """Calls for one reconciliation pass: the guard's allowance, a timeout, auth headers and
    the secrets to redact from anything it reports."""

    def __init__(
        self,
        client: OutboundClient,
        *,
        allowed_hosts: Collection[str],
        timeout_seconds: float,
        auth_headers: Mapping[str, str],
        secrets: Iterable[str],
    ) -> None:
        self._client = client
        self._allowed = tuple(allowed_hosts)
        self._timeout = timeout_seconds
        self._auth = dict(auth_headers)
        self._secrets = {s for s in secrets if s} | set(self._auth.values())

    def redacted(self, text: str) -> str:
        cleaned: str = redact(text, self._secrets)
        return cleaned

    async def call(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        expected: Collection[int] = (),
    ) -> tuple[int, Any]:
        """(status, decoded JSON answer or None); statuses in `expected` are not failures."""
        sent = {"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
        content = None
        if body is not None:
            content = msgspec.json.encode(body)
            sent.setdefault("Content-Type", "application/json")
        request = OutboundRequest(
            method=method,
            url=url,
            headers=sent,
            auth_headers=self._auth,
            content=content,
            timeout_seconds=self._timeout,
            max_response_bytes=MAX_ANSWER_BYTES,
        )
        what = f"{method} {_shown(url)}"
        try:
            response = await self._client.send(request, allowed_hosts=self._allowed)
        except AppError as error:
            raise SenderCallError(self.redacted(f"{what} failed: {error}")) from None
        failure = status_failure(what, response, expected)
        if failure is not None:
            raise SenderCallError(self.redacted(str(failure)))
        return response.status, self._decoded(what, response)

    def _decoded(self, what: str, response: OutboundResponse) -> Any:
        if not response.body.strip():
            return None
        try:
            return msgspec.json.decode(response.body)
        except msgspec.DecodeError:
            if "json" in response.headers.get("content-type", ""):
                raise SenderCallError(
                    self.redacted(f"{what} answered HTTP {response.status} with invalid JSON")
                ) from None
            return None


def _shown(url: str) -> str:
    """A URL without query or user info (either may carry a secret)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "(invalid URL)"
    return f"{parsed.scheme}://{parsed.host}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"
