"""The scheduler role: an APScheduler 3.x `AsyncIOScheduler` in the process's event loop.

    async with running(pool, dsn, settings, on_crash=on_crash) as role:
        ...  # the app serves; leaving the block stops firing

It never runs workflow steps: its jobs only turn time into events (cron fires), and the worker
role does the rest. It also runs the housekeeping loop (`maintenance.py`: retention pruning and
repair of database-change triggers) and keeps webhook registrations at their senders
(`registrations.py`, with its own change listener). Schedules live in our table, never in an APScheduler job store shared by
replicas: every replica loads the enabled ones into its own in-memory job set
(`schedule_set.py`), plans the same fires, and the event's idempotency key (schedule id and
tick time in UTC) makes each tick count once, however many replicas run.

Changes apply without a restart: the API notifies `switchyard_schedules` with the schedule id
in the change's transaction (`listener.py`), and one sync loop reloads that schedule; every
`resync_seconds` (and after the listener reconnects, since notifications sent meanwhile are
lost) it reloads them all, which also notices ticks missed while no scheduler ran. The sync
loop and the listener are supervised: a crash ends the process, never silently. Errors of one
sync pass or one fire are logged and retried; they never stop the loops.

Stopping: stop syncing and listening, pause APScheduler, let fires in flight finish within
`shutdown_grace_seconds` (a cancelled one rolls back and a replica or the next start fires the
tick), then shut APScheduler down, before the pool closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

import asyncpg
import structlog
from apscheduler.events import EVENT_JOB_ERROR
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from config.settings import Settings
from server.crypto.aead import Keyring
from server.db.trigger_health import IntakeRecorder
from server.scheduler.firing import Firing
from server.scheduler.listener import ScheduleListener
from server.scheduler.maintenance import maintenance_loop
from server.scheduler.registrations import Registrar
from server.scheduler.schedule_set import ScheduleSet
from server.supervision import CrashHandler, start_supervised

log = structlog.get_logger(__name__)

RESYNC_SECONDS: Final = 30.0
SYNC_RETRY_SECONDS: Final = 2.0
# Misfires are decided by `server.triggers.schedule.plan_fires`, not by APScheduler: a late
# wake-up must always run (grace None), and wake-ups that piled up run once (coalesce).
JOB_DEFAULTS: Final = {"coalesce": True, "misfire_grace_time": None, "max_instances": 1}


class SchedulerRole:
    """A started scheduler; `running()` yields it. Counters are for health checks and tests."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        settings: Settings,
        recorder: IntakeRecorder,
        keyring: Keyring,
        *,
        resync_seconds: float,
    ) -> None:
        self.scheduler_id = f"{socket.gethostname()[:150]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.scheduler = AsyncIOScheduler(timezone="UTC", job_defaults=JOB_DEFAULTS)
        self.firing = Firing(pool, self.scheduler_id, recorder)
        self.schedules = ScheduleSet(self.scheduler, self.firing, self.request_reload)
        self.listener = ScheduleListener(
            dsn,
            on_change=self.request_reload,
            on_connect=self.request_resync,
            reconnect_delay_seconds=settings.job_listener_reconnect_seconds,
        )
        self.registrar = Registrar(pool, dsn, settings, keyring, self.scheduler_id)
        self.syncs = 0
        self.stopping = False
        self._settings = settings
        self._resync_seconds = resync_seconds
        self._changed = asyncio.Event()
        self._full_resync = True  # the first pass loads everything
        self._last_full_resync = 0.0
        self._reloads: set[uuid.UUID] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._pool = pool
        self._stop = asyncio.Event()

    def request_reload(self, schedule_id: uuid.UUID) -> None:
        self._reloads.add(schedule_id)
        self._changed.set()

    def request_resync(self) -> None:
        self._full_resync = True
        self._changed.set()

    def start(self, on_crash: CrashHandler) -> None:
        self.scheduler.add_listener(_report_job_error, EVENT_JOB_ERROR)
        self.scheduler.start()
        self._changed.set()

        def stopping() -> bool:
            return self.stopping

        self._loops = [
            start_supervised(name, loop, on_crash=on_crash, stopping=stopping)
            for name, loop in [
                ("scheduler-sync", self._sync_loop()),
                ("scheduler-listener", self.listener.run()),
                ("scheduler-maintenance", maintenance_loop(self._pool, self._settings, self._stop)),
                ("scheduler-registrations", self.registrar.run(self._stop)),
                ("scheduler-registration-listener", self.registrar.listener.run()),
            ]
        ]
        log.info("scheduler_started", scheduler_id=self.scheduler_id)

    async def stop(self) -> None:
        self.stopping = True
        self._stop.set()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self.scheduler.pause()
        if self.schedules.wakes:
            await asyncio.wait(self.schedules.wakes, timeout=self._settings.shutdown_grace_seconds)
        self.scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # APScheduler shuts down in a callback of this loop
        log.info("scheduler_stopped", scheduler_id=self.scheduler_id)

    async def _sync_loop(self) -> None:
        while not self.stopping:
            with suppress(TimeoutError):
                async with asyncio.timeout(self._resync_seconds):
                    await self._changed.wait()
            self._changed.clear()
            now = asyncio.get_running_loop().time()
            if now - self._last_full_resync >= self._resync_seconds:
                self._full_resync = True  # the periodic resync
            full, reloads = self._full_resync, self._reloads
            self._full_resync, self._reloads = False, set()
            try:
                if full:
                    await self.schedules.resync()
                    self._last_full_resync = now
                else:
                    for schedule_id in reloads:
                        await self.schedules.reload(schedule_id)
                self.syncs += 1
            except Exception as error:  # noqa: BLE001 - one sync pass; the next one retries
                log.warning("schedule_sync_failed", error=repr(error))
                self._full_resync = True
                await asyncio.sleep(SYNC_RETRY_SECONDS)
                self._changed.set()


def _report_job_error(event: Any) -> None:
    # Wake-ups catch their own errors; anything reaching APScheduler is a bug worth a trace.
    log.error("scheduler_job_failed", job_id=event.job_id, error=repr(event.exception))


@asynccontextmanager
async def running(
    pool: asyncpg.Pool,
    dsn: str,
    settings: Settings,
    recorder: IntakeRecorder,
    keyring: Keyring,
    *,
    on_crash: CrashHandler,
    resync_seconds: float = RESYNC_SECONDS,
) -> AsyncIterator[SchedulerRole]:
    """Start the scheduler role; leaving the context stops it (see the module docstring)."""
    # APScheduler logs every run at INFO; our `schedule_fired` events say more.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    role = SchedulerRole(pool, dsn, settings, recorder, keyring, resync_seconds=resync_seconds)
    role.start(on_crash)
    try:
        yield role
    finally:
        await role.stop()
