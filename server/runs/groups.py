"""Concurrency and overlap groups: who counts together, their locks, and their state.

A group is a workflow's executions that share a key: `concurrency` groups by the rendered
`concurrency.key` of the workflow's options (one group, key '', when the option has no key),
`overlap` groups by `schedule:<schedule id>` (the executions a schedule with `overlap` `skip`
or `buffer_one` started). An execution counts in at most one group of each kind
(`workflow_execution.concurrency_key`, `overlap_key`). Each group has a transaction-level
advisory lock, so decisions about different groups never wait for each other: there is no
global lock. A transaction takes its groups' locks in ascending lock-key order, all in one
statement before any read that decides (`sql.LOCK_GROUPS`), so two transactions never wait for
each other in a cycle; a lock it finds it needs later is only tried (`try_lock`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Final

import msgspec

from server.runs import sql
from server.statements import Connection

# The first key of the two-int advisory locks of groups: a key space of their own (the
# one-bigint locks of the queue and the scheduler are another space). A 32-bit hash of the
# group is the second key; two groups sharing it only wait for each other, never mix counts.
GROUP_LOCK_SPACE: Final = 0x53594347  # "SYCG"


class GroupKind(StrEnum):
    CONCURRENCY = "concurrency"
    OVERLAP = "overlap"


class Group(msgspec.Struct, frozen=True, kw_only=True):
    kind: GroupKind
    workflow_id: uuid.UUID
    key: str

    @property
    def lock_key(self) -> int:
        """A stable signed 32-bit hash of the group (the same in every process)."""
        digest = hashlib.blake2b(
            f"{self.kind}:{self.workflow_id}:{self.key}".encode(), digest_size=4
        ).digest()
        return int.from_bytes(digest, "big", signed=True)


def execution_groups(
    workflow_id: uuid.UUID, concurrency_key: str | None, overlap_key: str | None
) -> list[Group]:
    """The groups an execution with these keys counts in."""
    groups = []
    if concurrency_key is not None:
        groups.append(
            Group(kind=GroupKind.CONCURRENCY, workflow_id=workflow_id, key=concurrency_key)
        )
    if overlap_key is not None:
        groups.append(Group(kind=GroupKind.OVERLAP, workflow_id=workflow_id, key=overlap_key))
    return groups


class GroupState(msgspec.Struct, kw_only=True):
    """A group as read under its lock; `running`: started, unfinished executions. `head`: the
    first held execution in arrival order (its groups and its version's concurrency limit)."""

    running: int
    head: uuid.UUID | None = None
    head_groups: list[Group] = msgspec.field(default_factory=list)
    head_limit: int | None = None


class Locks:
    """The group locks this transaction holds."""

    def __init__(self) -> None:
        self.held: set[int] = set()

    async def take(self, connection: Connection, groups: Iterable[Group]) -> None:
        """Take the locks of `groups` not held yet, in ascending order. Call once per
        transaction, before reading any of them; later additions go through `try_take`."""
        keys = sorted({group.lock_key for group in groups} - self.held)
        if keys:
            await sql.LOCK_GROUPS.fetchval(connection, lock_space=GROUP_LOCK_SPACE, lock_keys=keys)
            self.held.update(keys)

    async def try_take(self, connection: Connection, groups: Iterable[Group]) -> bool:
        """Take the locks of `groups` not held yet if each is free now; False if one is not
        (the ones taken stay held until the transaction ends, which is harmless)."""
        for key in sorted({group.lock_key for group in groups} - self.held):
            if not await sql.TRY_LOCK_GROUP.fetchval(
                connection, lock_space=GROUP_LOCK_SPACE, lock_key=key
            ):
                return False
            self.held.add(key)
        return True


async def read_states(connection: Connection, groups: list[Group]) -> dict[Group, GroupState]:
    """The state of each group (read after taking their locks)."""
    rows = await sql.GROUP_STATES.fetch(
        connection,
        kinds=[group.kind.value for group in groups],
        workflow_ids=[group.workflow_id for group in groups],
        keys=[group.key for group in groups],
    )
    states: dict[Group, GroupState] = {}
    for group, row in zip(groups, rows, strict=True):
        state = GroupState(running=row["running"])
        if row["head_id"] is not None:
            state.head = row["head_id"]
            state.head_groups = execution_groups(
                group.workflow_id, row["head_concurrency_key"], row["head_overlap_key"]
            )
            state.head_limit = row["head_concurrency_limit"]
        states[group] = state
    return states
