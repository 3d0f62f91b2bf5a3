"""Workflow concurrency limits and schedule overlap: which executions start, wait or are skipped.

At intake (`place`, called by `server.runs.intake` only for routes of a workflow with a
`concurrency` option or for a schedule's fire with `overlap` other than `allow`), under the
locks of the arrivals' groups (`server.runs.groups`), each arrival:
- is skipped (no execution; its event records why) when its schedule's overlap policy says so:
  `skip` while an execution this schedule started for the workflow is unfinished, `buffer_one`
  while one already waits;
- waits held (PENDING, no entry step, no job) when `buffer_one` buffers it, or when its
  concurrency group has `limit` started, unfinished executions or a held one ahead of it
  (arrival order holds) and `overflow` is `queue`; with `overflow: skip` it is skipped;
- starts otherwise.
The concurrency key is rendered over `trigger` (the event's payload) only: a workflow's
variables would need a read per arrival, so publishing refuses keys that read `vars` or
`steps`. A key that fails to render skips the arrival with the reason (no group can be chosen).

When an execution of a group ends, its `execution_ended` job calls `admit_next`: under the
groups' locks, the first held execution of each group (arrival order: created_at, id) starts
while every group it counts in has room (fewer than `limit` started, unfinished executions:
the held execution's own version's limit; 1 for an overlap group) and it is first in line
there; an admitted execution's other group is then looked at too. A held execution buffered by
a schedule whose concurrency group has `overflow: skip` waits like a queued one.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from enum import StrEnum
from typing import Any, Final

import msgspec
import structlog

from server.engine.bounded import render_cfg_bounded
from server.engine.document import Concurrency
from server.engine.rendering import RenderError
from server.queue.jobs import RetryableError
from server.runs.admission import admit
from server.runs.groups import (
    Group,
    GroupKind,
    GroupState,
    Locks,
    execution_groups,
    read_states,
)
from server.statements import Connection
from server.triggers.schedule import OverlapPolicy

log = structlog.get_logger(__name__)

# Longer rendered keys are stored as their digest (equal keys, equal digests): the key is an
# index column, and a long one would only cost space.
MAX_KEY_CHARS: Final = 200
OVERLAP_LIMIT: Final = 1  # an overlap group runs one execution at a time


class Overlap(msgspec.Struct, frozen=True, kw_only=True):
    """A schedule fire's overlap policy (`skip` or `buffer_one`) and group key."""

    key: str
    policy: OverlapPolicy


def schedule_overlap(schedule_id: uuid.UUID, policy: OverlapPolicy) -> Overlap | None:
    """The overlap group of a schedule's executions; None for `allow` (no group)."""
    if policy is OverlapPolicy.ALLOW:
        return None
    return Overlap(key=f"schedule:{schedule_id}", policy=policy)


class Arrival(msgspec.Struct, frozen=True, kw_only=True):
    """An execution an event would start: its workflow and that version's concurrency."""

    workflow_id: uuid.UUID
    concurrency: Concurrency | None


class Fate(StrEnum):
    START = "start"
    HOLD = "hold"
    SKIP = "skip"


class Placement(msgspec.Struct, frozen=True, kw_only=True):
    fate: Fate
    reason: str | None = None  # why it was skipped
    concurrency_key: str | None = None
    overlap_key: str | None = None


async def place(
    connection: Connection, arrivals: list[Arrival], payload: Any, overlap: Overlap | None
) -> list[Placement]:
    """Where each arrival goes, in order (see the module docstring). Call inside the
    transaction that records the executions: the group locks are held until it ends."""
    keyed: list[tuple[Group | None, Group | None] | str] = []
    for arrival in arrivals:
        try:
            keyed.append(await _groups(arrival, payload, overlap))
        except RenderError as error:
            keyed.append(
                f"workflow {arrival.workflow_id}: the concurrency key could not be rendered: {error}"
            )
    groups = list(dict.fromkeys(g for item in keyed if isinstance(item, tuple) for g in item if g))
    await Locks().take(connection, groups)
    states = await read_states(connection, groups)
    placements = []
    for arrival, item in zip(arrivals, keyed, strict=True):
        if isinstance(item, str):
            placements.append(Placement(fate=Fate.SKIP, reason=item))
            continue
        concurrency_group, overlap_group = item
        fate, reason = _decide(
            arrival,
            "" if concurrency_group is None else concurrency_group.key,
            None if concurrency_group is None else states[concurrency_group],
            None if overlap_group is None else states[overlap_group],
            overlap,
        )
        for group in (concurrency_group, overlap_group):
            if group is not None:
                _count(states[group], fate)
        placements.append(
            Placement(
                fate=fate,
                reason=reason,
                concurrency_key=None if concurrency_group is None else concurrency_group.key,
                overlap_key=None if overlap_group is None else overlap_group.key,
            )
        )
    return placements


async def _groups(
    arrival: Arrival, payload: Any, overlap: Overlap | None
) -> tuple[Group | None, Group | None]:
    concurrency_group = overlap_group = None
    if arrival.concurrency is not None:
        key = await concurrency_key(arrival.concurrency, payload)
        concurrency_group = Group(
            kind=GroupKind.CONCURRENCY, workflow_id=arrival.workflow_id, key=key
        )
    if overlap is not None:
        overlap_group = Group(
            kind=GroupKind.OVERLAP, workflow_id=arrival.workflow_id, key=overlap.key
        )
    return concurrency_group, overlap_group


async def concurrency_key(concurrency: Concurrency, payload: Any) -> str:
    """The group key of an arrival: `concurrency.key` rendered over `trigger` ('' without one).

    Raises:
        RenderError: the template failed (e.g. the payload lacks a field it reads).
    """
    if concurrency.key is None:
        return ""
    rendered = await render_cfg_bounded({"key": concurrency.key}, {"trigger": payload})
    value = rendered.value["key"]
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    if len(text) > MAX_KEY_CHARS:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def _decide(
    arrival: Arrival,
    key: str,
    concurrency_state: GroupState | None,
    overlap_state: GroupState | None,
    overlap: Overlap | None,
) -> tuple[Fate, str | None]:
    if overlap is not None and overlap_state is not None:
        waiting = overlap_state.head is not None
        if overlap.policy is OverlapPolicy.SKIP and (overlap_state.running or waiting):
            return Fate.SKIP, (
                f"workflow {arrival.workflow_id}: an execution this schedule started is "
                "unfinished (overlap: skip)"
            )
        if waiting:
            return Fate.SKIP, (
                f"workflow {arrival.workflow_id}: an execution this schedule started is "
                "unfinished and another already waits (overlap: buffer_one)"
            )
        if overlap_state.running:
            return Fate.HOLD, None
    concurrency = arrival.concurrency
    if concurrency is None or concurrency_state is None:
        return Fate.START, None
    if concurrency_state.running < concurrency.limit and concurrency_state.head is None:
        return Fate.START, None
    if concurrency.overflow == "skip":
        return Fate.SKIP, (
            f"workflow {arrival.workflow_id}: concurrency limit {concurrency.limit} reached"
            f"{'' if concurrency.key is None else f' for key {key!r}'} (overflow: skip)"
        )
    return Fate.HOLD, None


def _count(state: GroupState, fate: Fate) -> None:
    """Count an arrival placed in a group, for the arrivals after it in the same event."""
    if fate is Fate.START:
        state.running += 1
    elif fate is Fate.HOLD and state.head is None:
        state.head = uuid.UUID(int=0)  # someone waits now; who does not matter at intake


async def admit_next(
    connection: Connection,
    workflow_id: uuid.UUID,
    *,
    concurrency_key: str | None,
    overlap_key: str | None,
) -> list[uuid.UUID]:
    """Admit the next held executions of the groups an ended execution counted in (see the
    module docstring); returns the ones started. Call in the `execution_ended` job's
    transaction.

    Raises:
        RetryableError: a held execution also counts in a group whose lock another transaction
            holds (taking it out of order could deadlock): the job runs again shortly.
    """
    groups = execution_groups(workflow_id, concurrency_key, overlap_key)
    locks = Locks()
    # A first look, unlocked, at the heads' other groups, so that all the locks this will need
    # are taken in order; what decides is read again under them.
    peek = await read_states(connection, groups)
    await locks.take(connection, [*groups, *(g for s in peek.values() for g in s.head_groups)])
    admitted: list[uuid.UUID] = []
    pending = list(groups)
    while (started := await _admit_one(connection, locks, pending)) is not None:
        admitted.extend(started)
    return admitted


async def _admit_one(
    connection: Connection, locks: Locks, pending: list[Group]
) -> list[uuid.UUID] | None:
    """Admit the first admissible head of the `pending` groups; None when none is. An
    admitted execution's groups join `pending`."""
    states = await read_states(connection, pending)
    for group in pending:
        head = states[group]
        if head.head is None:
            continue
        if not await locks.try_take(connection, head.head_groups):
            raise RetryableError(
                f"group lock of held execution {head.head} is busy",
                delay=random.uniform(0.05, 0.5),  # noqa: S311 - jitter, not a secret
            )
        theirs = await read_states(connection, head.head_groups)
        if not all(_has_room(head, g, theirs[g]) for g in head.head_groups):
            continue
        started = await admit(connection, [head.head])
        # Not started: cancelled meanwhile (its own end admits the next); look again.
        for other in head.head_groups:
            if other not in pending:
                pending.append(other)
        log.info("held_execution_admitted", execution_id=str(head.head), started=bool(started))
        return started
    return None


def _has_room(head: GroupState, group: Group, state: GroupState) -> bool:
    """Whether `head`'s held execution may start as far as `group` is concerned."""
    if state.head != head.head:
        return False  # another is first in line there
    if group.kind is GroupKind.OVERLAP:
        return state.running < OVERLAP_LIMIT
    return state.running < (head.head_limit or 1)
