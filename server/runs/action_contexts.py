"""Building the `ActionContext` an action receives for one attempt of one step.

Credentials are decrypted on demand (`load_credential`), in memory only, and every value loaded
is added to the attempt's secrets so the step's output and error are redacted of it too.
"""

from __future__ import annotations

import uuid
from typing import Any

from config.settings import Settings
from server.actions.base import ActionContext
from server.crypto.aead import Keyring
from server.db.credentials import load_credential_data
from server.engine.planning import Graph
from server.engine.rendering import secret_strings
from server.queue.client import Connection
from server.runs.store import ExecutionRow


class ActionContexts:
    """`make(cfg)` gives the context for one attempt; the rest is fixed per attempt."""

    def __init__(
        self,
        settings: Settings,
        keyring: Keyring,
        execution: ExecutionRow,
        graph: Graph,
        step_key: str,
        attempt: int,
        secrets: set[str],
        connection: Connection | None,
        *,
        timeout_seconds: float,
    ) -> None:
        self._settings = settings
        self._keyring = keyring
        self._execution = execution
        self._step_key = step_key
        self._step_id = uuid.UUID(graph.step_ids[step_key])
        self._timeout_seconds = timeout_seconds
        self._attempt = attempt
        self._secrets = secrets
        self._connection = connection

    async def load_credential(self, name_or_id: str, expected_type: str) -> dict[str, Any]:
        data = await load_credential_data(name_or_id, self._keyring, expected_type=expected_type)
        self._secrets.update(secret_strings(data.values()))  # credential values are never shown
        return data

    def __call__(self, cfg: dict[str, Any]) -> ActionContext:
        return ActionContext(
            execution_id=self._execution.id,
            workflow_id=self._execution.workflow_id,
            step_id=self._step_id,
            step_key=self._step_key,
            attempt=self._attempt,
            idempotency_key=f"{self._execution.id}:{self._step_id}",
            cfg=cfg,
            settings=self._settings,
            load_credential=self.load_credential,
            timeout_seconds=self._timeout_seconds,
            connection=self._connection,
            register_secret=self.register_secret,
        )

    def register_secret(self, value: str) -> None:
        self._secrets.add(value)
        # A header value such as "Bearer <token>" also hides the bare token.
        self._secrets.update(part for part in value.split(" ") if len(part) >= 8)
