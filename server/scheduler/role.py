"""The scheduler role: an APScheduler 3.x `AsyncIOScheduler` in the process's event loop.

It never runs workflow steps: its jobs only turn time into events (cron fires, retention
sweeps), and the worker role does the rest. Schedules live in our tables, never in an
APScheduler job store shared by replicas; every replica plans the same fires and the event's
idempotency key makes each fire count once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from apscheduler.events import EVENT_JOB_ERROR
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from config.settings import Settings
from server.supervision import CrashHandler

log = structlog.get_logger(__name__)

# APScheduler's default misfire grace is 1 s: a busy loop would silently drop fires.
JOB_DEFAULTS = {"coalesce": True, "misfire_grace_time": 3600, "max_instances": 1}


@asynccontextmanager
async def running(settings: Settings, *, on_crash: CrashHandler) -> AsyncIterator[AsyncIOScheduler]:
    """Start the scheduler loop; exiting the context shuts it down without waiting for jobs."""
    scheduler = AsyncIOScheduler(timezone="UTC", job_defaults=JOB_DEFAULTS)

    def report_error(event: object) -> None:
        error = getattr(event, "exception", None)
        log.error("scheduler_job_failed", job_id=getattr(event, "job_id", None), error=repr(error))

    scheduler.add_listener(report_error, EVENT_JOB_ERROR)
    scheduler.start()
    log.info("scheduler_started")
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)
        log.info("scheduler_stopped")
