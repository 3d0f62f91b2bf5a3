"""`wait_for_event` steps (being built: see issue 14)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from config.settings import Settings
from server.engine.document import Step
from server.runs.step_kinds import Outcome, failed
from server.runs.store import ExecutionRow
from server.statements import Connection


class WaitRun(msgspec.Struct, frozen=True, kw_only=True):
    execution: ExecutionRow
    step: Step
    step_id: uuid.UUID
    context: Mapping[str, Any]
    secret_keys: frozenset[str]


async def start_wait(connection: Connection, settings: Settings, wait: WaitRun) -> Outcome:
    del connection, settings, wait
    return failed("wait_for_event is not built yet")


async def finish_wait(connection: Connection, wait: WaitRun, resumed: dict[str, Any]) -> Outcome:
    del connection, wait, resumed
    return failed("wait_for_event is not built yet")
