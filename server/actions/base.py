"""What an action is: an async `run(context) -> output` with a JSON schema for its cfg.

The runtime (`server.runs`) renders the step's `cfg` (templates resolved, secrets decrypted in memory
only) and calls the action with an `ActionContext`. An action returns a JSON-serialisable dict
(the step's output, `steps.<key>.output` for later steps) or raises `RetryableError` (optionally
with a delay, e.g. from `Retry-After`) or `PermanentError` from `server.queue.jobs`; anything
else counts as retryable. Effects must be idempotent under retry: `idempotency_key` is stable
for one step of one execution across attempts and workers.

Most actions run outside any database transaction (no network call holds locks). An action
marked `transactional` instead runs inside the step's completion transaction and gets its
`connection`, so its writes commit together with the step result or not at all
(`task_management`). If it fails (raises), the runtime rolls that whole transaction back,
undoing whatever the action wrote, and records the failure in a transaction of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from config.settings import Settings
from server.queue.client import Connection

Output = dict[str, Any]
CredentialLoader = Callable[[str, str], Awaitable[dict[str, Any]]]
"""`await load_credential(name_or_id, expected_type)`: a credential's data, decrypted."""


class ActionContext(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: uuid.UUID
    workflow_id: uuid.UUID
    step_id: uuid.UUID
    step_key: str
    attempt: int
    idempotency_key: str
    cfg: dict[str, Any]
    settings: Settings
    load_credential: CredentialLoader
    timeout_seconds: float
    connection: Connection | None = None  # only for transactional actions
    register_secret: Callable[[str], None] = lambda _value: None
    """Tell the runtime about a secret the action derived (an `Authorization` header built from
    a credential, a fetched token) so it is redacted from the step's records too."""

    def __repr__(self) -> str:  # cfg may hold decrypted secrets: never print it
        return f"ActionContext(execution_id={self.execution_id}, step_key={self.step_key!r})"


class Action(Protocol):
    """One action kind: its registry key, whether it runs inside the step transaction, and run."""

    @property
    def action_key(self) -> str: ...

    @property
    def transactional(self) -> bool: ...

    async def run(self, context: ActionContext) -> Output: ...


class FunctionAction(msgspec.Struct, frozen=True, kw_only=True):
    """An action made of a module's `run` function."""

    action_key: str
    run_function: Callable[[ActionContext], Awaitable[Output]]
    transactional: bool = False

    async def run(self, context: ActionContext) -> Output:
        return await self.run_function(context)
