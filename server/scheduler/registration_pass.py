"""What a provider works with during one reconciliation of one registration.

The registrar (`server.scheduler.registrations`) builds it after taking the row's lock: the row,
the callback URL, the endpoint's current secret and the credential's data (in memory only), the
guarded sender calls, and the two writes a provider makes mid-pass: `call_started()` just before
a call that may create something at the sender, and `record(side)` as soon as the sender's side
is known. A provider returns the state the registration reached and, for expiring ones, when it
must be renewed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from server.db.registration_runs import RegistrationWork, SenderSide
from server.scheduler.sender_calls import SenderCalls
from server.triggers.registration import RegistrationState


class Reached(msgspec.Struct, frozen=True, kw_only=True):
    state: RegistrationState
    renew_at: dt.datetime | None = None  # when an expiring registration must be renewed


class RegistrationPass:
    def __init__(
        self,
        *,
        work: RegistrationWork,
        callback_url: str,
        secret: str | None,
        credential: dict[str, Any] | None,
        calls: SenderCalls,
        record: Callable[[SenderSide], Awaitable[None]],
        call_started: Callable[[], Awaitable[None]],
    ) -> None:
        self.work = work
        self.callback_url = callback_url
        self.secret = secret
        self.credential = credential or {}
        self.calls = calls
        self._record = record
        self._call_started = call_started
        self.side = SenderSide(
            external_id=work.external_id,
            registered_url=work.registered_url,
            subscription=work.subscription,
            renewed_at=work.renewed_at,
            expires_at=work.expires_at,
        )

    def __repr__(self) -> str:
        return f"RegistrationPass(registration={self.work.id!r}, secrets=<redacted>)"

    @property
    def changed(self) -> bool:
        """Whether a change (secret, events, path, ...) waits to be carried out."""
        return self.work.applied_generation != self.work.generation

    async def record(self, side: SenderSide) -> None:
        self.side = side
        await self._record(side)

    async def creating(self) -> None:
        """Note that a call that may create something at the sender starts now."""
        await self._call_started()
