"""The `http` provider: templated subscribe / unsubscribe / renew calls, for any sender with a
subscription API (Microsoft Graph, Google push channels, most SaaS webhooks APIs).

Templates render in the sandbox (`server.engine.bounded`) over `callback_url`, `secret` and, for
unsubscribe and renew, `subscription` (the recorded answer of the subscribe call).

- Wanted, nothing subscribed: subscribe (`call_started` first), record the answer at once.
- Wanted, a change waits (rotated secret, new path): subscribe anew, record it, then unsubscribe
  the previous subscription (make before break: no delivery is lost in between). If that
  unsubscribe fails, the pass fails with the sender's error, and the previous subscription is
  left to the sender (it lapses where subscriptions expire).
- Wanted, renewal due (`renew_every_seconds` since the last (re)subscription): the `renew` call
  when given (a JSON object answer replaces `subscription`), else subscribe anew and unsubscribe
  the previous one.
- Not wanted: unsubscribe the recorded subscription (404 and 410 count as gone).

A generic subscription API cannot be searched, so unlike `github` a subscribe call whose answer
was lost (the replica killed after the sender accepted it) cannot be adopted: the next holder
waits out the call's timeout, then subscribes again, and the lost one lapses at the sender (or,
without expiry, stays until removed there by hand). The module docstring of
`server.scheduler.registrations` explains why this window is as small as it can be.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import structlog

from server.db.registration_runs import SenderSide
from server.engine.bounded import render_cfg_bounded
from server.engine.rendering import RenderError
from server.scheduler.registration_pass import Reached, RegistrationPass
from server.scheduler.sender_calls import SenderCallError
from server.triggers.registration import HttpCall, HttpRegistration, RegistrationState

log = structlog.get_logger(__name__)

GONE: Final = (404, 410)


async def reconcile_http(
    work: RegistrationPass, spec: HttpRegistration, now: dt.datetime
) -> Reached:
    previous = work.side.subscription
    if not work.work.should_exist:
        if previous is not None and spec.unsubscribe is not None:
            await _send(work, spec.unsubscribe, "unsubscribe", previous, expected=GONE)
        await work.record(SenderSide())
        return Reached(state=RegistrationState.REMOVED)
    renew_due = (
        spec.renew_every_seconds is not None
        and work.side.expires_at is not None
        and work.side.expires_at <= now
    )
    if previous is None or work.changed or (renew_due and spec.renew is None):
        await work.creating()
        answer = await _send(work, spec.subscribe, "subscribe", None)
        await work.record(_subscribed(answer, spec, now, url=work.callback_url))
        if previous is not None and spec.unsubscribe is not None:
            await _send(work, spec.unsubscribe, "unsubscribe", previous, expected=GONE)
    elif renew_due and spec.renew is not None:
        answer = await _send(work, spec.renew, "renew", previous)
        kept = answer if isinstance(answer, dict) else previous
        await work.record(
            _subscribed(kept, spec, now, url=work.callback_url, external_id=work.side.external_id)
        )
    return Reached(state=RegistrationState.REGISTERED, renew_at=work.side.expires_at)


def _subscribed(
    answer: Any,
    spec: HttpRegistration,
    now: dt.datetime,
    *,
    url: str,
    external_id: str | None = None,
) -> SenderSide:
    subscription = answer if answer is not None else {}
    if external_id is None and isinstance(answer, dict) and answer.get("id") is not None:
        external_id = str(answer["id"])
    expires = None
    if spec.renew_every_seconds is not None:
        expires = now + dt.timedelta(seconds=spec.renew_every_seconds)
    return SenderSide(
        external_id=external_id,
        registered_url=url,
        subscription=subscription,
        renewed_at=now,
        expires_at=expires,
    )


async def _send(
    work: RegistrationPass,
    call: HttpCall,
    name: str,
    subscription: Any,
    expected: tuple[int, ...] = (),
) -> Any:
    context: dict[str, Any] = {"callback_url": work.callback_url, "secret": work.secret}
    if name != "subscribe":
        context["subscription"] = subscription
    template = {"url": call.url, "json": call.json, "headers": call.headers}
    try:
        rendered = (await render_cfg_bounded(template, context)).value
    except RenderError as error:
        raise SenderCallError(work.calls.redacted(f"registration.{name}: {error}")) from None
    headers = rendered["headers"] if isinstance(rendered["headers"], dict) else {}
    _, answer = await work.calls.call(
        call.method,
        str(rendered["url"]),
        body=rendered["json"],
        headers={str(k): str(v) for k, v in headers.items()},
        expected=expected,
    )
    return answer
