"""The `trigger_event` job handler: fan out an event a database trigger recorded.

The capture trigger records the change and enqueues this job in the changing transaction; the
handler starts the subscribed executions and sets the event's outcome in the transaction that
completes the job, so each change fans out exactly once.
"""

from __future__ import annotations

import uuid
from typing import Final

from server.db.trigger_health import IntakeOutcome, IntakeRecorder
from server.queue.handlers import JobContext
from server.runs.intake import fan_out_recorded_event

EVENT_JOB_KIND: Final = "trigger_event"


class EventFanOut:
    """Callable job handler for `trigger_event` jobs."""

    def __init__(self, recorder: IntakeRecorder) -> None:
        self._recorder = recorder

    async def __call__(self, job: JobContext) -> None:
        async with job.transaction() as connection:
            accepted = await fan_out_recorded_event(connection, uuid.UUID(job.payload["event_id"]))
        if accepted is not None:
            self._recorder.record(accepted.trigger_key, IntakeOutcome(accepted.outcome))
