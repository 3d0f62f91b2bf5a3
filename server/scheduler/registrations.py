"""Webhook registration in the scheduler role: keep each endpoint's subscription at its sender
registered, corrected, renewed and removed (DESIGN §6), exactly once across replicas.

What should exist is in `webhook_registration` (`server.db.webhook_registrations`): the API
writes it in the endpoint's own transaction, bumps the row's `generation`, makes it due now and
notifies `switchyard_registrations`. Every replica listens and wakes at once; each also wakes
when the earliest row falls due (`next_check_at`: the periodic check every
REGISTRATION_CHECK_SECONDS, a renewal, a retry with backoff after a failure) and polls every
POLL_SECONDS in case a notification was lost. A wake-up reconciles the due rows.

Exactly once, with N replicas and kills:

1. One holder per row. A reconciliation takes a session-level advisory lock on the row
   (`pg_try_advisory_lock`, `server.db.registration_runs`) on a pooled connection it keeps for
   the pass; replicas that do not get it skip the row. No transaction stays open while the
   sender is called. PostgreSQL drops the lock when the holder's connection ends, so a
   SIGKILLed replica frees its row at once, and the row stays due (nothing was recorded), so
   another replica takes it over within a second.
2. Read after locking. The holder re-reads the row after the lock is taken and goes on only if
   it is still due: a peer that finished just before has moved `next_check_at` on, so the same
   change is never applied twice.
3. Record around every creating call. `call_started_at` is set just before a call that may
   create something at the sender, and the sender's id is recorded the moment the answer
   arrives, before anything else. A successor that finds `call_started_at` set (its predecessor
   died between the two) first waits until that call's timeout
   (REGISTRATION_CALL_TIMEOUT_SECONDS) has passed, so a request the dead replica left in flight
   has landed or failed, and only then looks at the sender.
4. Look before creating. A `github` pass lists the repository's hooks first and adopts a hook
   that points at our callback URL instead of creating another, and deletes any further hook of
   ours (so even a request that landed later than its timeout leaves one hook after one pass).
   An `http` sender cannot be searched: there, step 3 is what prevents a second subscription.

Failures (the sender down or refusing, a missing credential, PUBLIC_URL unset) leave the row
`failed` with the sender's error (secrets redacted, `server.scheduler.sender_calls`) and retry
it after 1, 2, 4, ... seconds, at most five minutes and never later than the next check. A
detached row (endpoint deleted) that was removed at the sender is deleted; until then it is
retried like any other and listed as stale by the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from contextlib import suppress
from typing import Any, Final

import asyncpg
import structlog
from prometheus_client import Counter

from config.settings import Settings
from server.actions.guarded_http import OutboundClient, basic_authorization
from server.crypto.aead import Keyring
from server.db import registration_runs as runs
from server.db.credentials import load_credential_data
from server.db.pool import changed_session
from server.db.webhook_auth import unseal_secrets
from server.db.webhook_registrations import REGISTRATION_CHANNEL
from server.engine.rendering import redact, secret_strings
from server.errors import AppError
from server.queue.listener import ChannelListener
from server.scheduler.github_hooks import github_auth_headers, reconcile_github
from server.scheduler.registration_pass import Reached, RegistrationPass
from server.scheduler.sender_calls import SenderCalls
from server.scheduler.subscriptions import reconcile_http
from server.triggers.registration import (
    GitHubRegistration,
    HttpRegistration,
    RegistrationState,
    callback_url,
    provider_of,
    retry_delay,
)

log = structlog.get_logger(__name__)

POLL_SECONDS: Final = 30.0
# After a pass that left due rows (held by a peer, or failing to load), look again this soon.
BUSY_RETRY_SECONDS: Final = 1.0
BATCH: Final = 50
CONCURRENT_PASSES: Final = 4
ACQUIRE_TIMEOUT_SECONDS: Final = 10.0
LISTENER_NAME: Final = "registration_listener"

REGISTRATION_PASSES = Counter(
    "switchyard_webhook_registration_passes_total",
    "Webhook registration reconciliations this scheduler made, by provider and result",
    ["provider", "result"],
)


class Registrar:
    """Reconciles due registrations until stopped (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        settings: Settings,
        keyring: Keyring,
        scheduler_id: str,
        *,
        client: OutboundClient | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._keyring = keyring
        self._scheduler_id = scheduler_id
        self._client = client or OutboundClient()
        self._wake = asyncio.Event()
        self._check = dt.timedelta(seconds=settings.registration_check_seconds)
        self.listener = ChannelListener(
            dsn,
            REGISTRATION_CHANNEL,
            name=LISTENER_NAME,
            on_notify=lambda _payload: self._wake.set(),
            on_connect=self._wake.set,
            reconnect_delay_seconds=settings.job_listener_reconnect_seconds,
        )
        self.passes = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile due rows, then sleep until woken, the next due row or the poll."""
        while not stop.is_set():
            self._wake.clear()
            try:
                delay = await self.run_due()
            except (OSError, asyncpg.PostgresError, TimeoutError) as error:
                log.warning("webhook_registration_scan_failed", error=repr(error))
                delay = BUSY_RETRY_SECONDS
            with suppress(TimeoutError):
                async with asyncio.timeout(min(max(delay, 0.0), POLL_SECONDS)):
                    await self._wake.wait()

    async def run_due(self) -> float:
        """One round over the due rows; seconds until the next one is due."""
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
            due = await runs.due_registrations(connection, BATCH)
        gate = asyncio.Semaphore(CONCURRENT_PASSES)

        async def one(registration_id: uuid.UUID) -> None:
            async with gate:
                await self.reconcile(registration_id)

        await asyncio.gather(*(one(registration_id) for registration_id in due))
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
            next_due = await runs.seconds_to_next_due(connection)
        if next_due is None:
            return POLL_SECONDS
        return max(next_due, BUSY_RETRY_SECONDS if next_due <= 0 else 0.0)

    async def reconcile(self, registration_id: uuid.UUID) -> bool:
        """Reconcile one row if this replica gets its lock and it is still due."""
        try:
            async with (
                self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection,
                changed_session(connection),  # its reset releases the advisory lock
            ):
                if not await runs.try_lock(connection, registration_id):
                    return False
                work = await runs.load_registration(
                    connection,
                    registration_id,
                    call_timeout_seconds=self._settings.registration_call_timeout_seconds,
                )
                if work is None or not work.due:
                    return False
                await runs.claim(connection, registration_id, self._scheduler_id)
                await self._reconcile_locked(connection, work)
                return True
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            log.warning(
                "webhook_registration_not_recorded",
                registration_id=str(registration_id),
                error=repr(error),
            )
            return False

    async def _reconcile_locked(self, connection: Any, work: runs.RegistrationWork) -> None:
        if work.in_flight_seconds > 0:
            log.info(
                "webhook_registration_waiting_for_call_in_flight",
                registration_id=str(work.id),
                seconds=round(work.in_flight_seconds, 2),
            )
            await asyncio.sleep(work.in_flight_seconds)
        provider = provider_of(work.spec).value
        secrets: set[str] = set()
        now = dt.datetime.now(dt.UTC)
        try:
            registration_pass = await self._pass(connection, work, secrets)
            reached = await self._provider_pass(registration_pass, work, now)
        except Exception as error:  # noqa: BLE001 - one registration: record, retry later
            message = (
                redact(str(error) or repr(error), secrets)
                if isinstance(error, AppError)
                else redact(f"{error.__class__.__name__}: {error}", secrets)
            )
            retry_in = retry_delay(work.failures + 1, self._check)
            await runs.record_failure(connection, work, message, retry_in)
            REGISTRATION_PASSES.labels(provider, "failed").inc()
            log.warning(
                "webhook_registration_failed",
                registration_id=str(work.id),
                webhook_id=str(work.endpoint_id),
                provider=provider,
                error=message,
                retry_in_seconds=retry_in.total_seconds(),
            )
            return
        self.passes += 1
        REGISTRATION_PASSES.labels(provider, reached.state.value).inc()
        if work.detached and reached.state is RegistrationState.REMOVED:
            await runs.delete_removed(connection, work)
        else:
            next_check = dt.datetime.now(dt.UTC) + self._check
            if reached.renew_at is not None:
                next_check = min(next_check, reached.renew_at)
            await runs.record_success(connection, work, reached.state, next_check)
        log.info(
            "webhook_registration_reconciled",
            registration_id=str(work.id),
            webhook_id=str(work.endpoint_id),
            provider=provider,
            state=reached.state.value,
            detached=work.detached,
        )

    async def _pass(
        self, connection: Any, work: runs.RegistrationWork, secrets: set[str]
    ) -> RegistrationPass:
        """The pass's inputs: secrets decrypted (memory only), added to `secrets` as found."""
        endpoint_secrets = unseal_secrets(
            self._keyring, work.endpoint_id, work.secret_key_id, work.secret_ciphertext
        )
        secrets.update(endpoint_secrets)
        credential: dict[str, Any] | None = None
        if work.spec.credential is not None:
            expected = "api_key" if isinstance(work.spec, GitHubRegistration) else None
            credential = await load_credential_data(
                work.spec.credential, self._keyring, expected_type=expected
            )
            secrets.update(secret_strings(credential.values()))
        url = self._callback_url(work)

        async def record(side: runs.SenderSide) -> None:
            await runs.record_sender_side(connection, work.id, side)

        async def call_started() -> None:
            await runs.mark_call_started(connection, work.id)

        return RegistrationPass(
            work=work,
            callback_url=url,
            secret=endpoint_secrets[0] if endpoint_secrets else None,
            credential=credential,
            calls=SenderCalls(
                self._client,
                allowed_hosts=self._settings.http_allowed_hosts,
                timeout_seconds=self._settings.registration_call_timeout_seconds,
                auth_headers=_auth_headers(work, credential or {}),
                secrets=secrets,
            ),
            record=record,
            call_started=call_started,
        )

    def _callback_url(self, work: runs.RegistrationWork) -> str:
        if self._settings.public_url is not None:
            return callback_url(self._settings.public_url, work.path)
        if work.registered_url is not None and not work.should_exist:
            return work.registered_url  # enough to find and remove what was registered
        raise AppError(
            "PUBLIC_URL is not set on this scheduler: set it to the address senders reach "
            "Switchyard at (the callback URL is PUBLIC_URL + /hooks/{path})"
        )

    @staticmethod
    async def _provider_pass(
        registration_pass: RegistrationPass, work: runs.RegistrationWork, now: dt.datetime
    ) -> Reached:
        if isinstance(work.spec, GitHubRegistration):
            return await reconcile_github(registration_pass, work.spec)
        assert isinstance(work.spec, HttpRegistration)  # noqa: S101 - the union has two kinds
        return await reconcile_http(registration_pass, work.spec, now)


def _auth_headers(work: runs.RegistrationWork, credential: dict[str, Any]) -> dict[str, str]:
    if isinstance(work.spec, GitHubRegistration):
        return github_auth_headers(credential)
    username, password = credential.get("username"), credential.get("password")
    if isinstance(username, str) and isinstance(password, str):
        return {"Authorization": basic_authorization(username, password)}
    key = credential.get("api_key")
    if not isinstance(key, str) or not key:
        return {}
    header = credential.get("header")
    if isinstance(header, str) and header and header.lower() != "authorization":
        return {header: key}
    return {"Authorization": f"Bearer {key}"}
