"""Switchyard driven by manual runs: `switchyard run` as bench.e2e starts it, without a webhook.

For the benchmarks that start executions themselves (`bench.handoff`, `bench.flow`): the server
starts as in `bench/e2e_switchyard.py` (api and worker roles, a fresh database), then a subclass
imports and publishes its workflows through the REST API (`set_up_workflows`), starts
executions with `POST /api/v1/workflows/{id}/run` and polls their rows until they finished.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import httpx

from bench.e2e_switchyard import SwitchyardServer

FINISH_TIMEOUT_SECONDS: Final = 300.0
API_TIMEOUT_SECONDS: Final = 30.0
UNFINISHED: Final = """
SELECT count(*) FROM workflow_execution
WHERE id = ANY($1::uuid[]) AND status NOT IN ('SUCCESS', 'FAILED', 'CANCELLED')
"""


class ManualRunServer(SwitchyardServer):
    """`switchyard run` (api and worker in one process) set up with workflows, not a webhook."""

    def __init__(self, *, worker_concurrency: int, pool_size: int) -> None:
        super().__init__(
            worker_concurrency=worker_concurrency, pool_size=pool_size, worker_processes=0
        )
        self._api: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def running(self, admin_dsn: str, run_dir: Path) -> AsyncIterator[None]:
        try:
            async with super().running(admin_dsn, run_dir):
                yield
        finally:
            if self._api is not None:
                await self._api.aclose()
                self._api = None

    async def _set_up(self, base: str, token: str) -> None:
        self._api = httpx.AsyncClient(
            base_url=f"{base}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=API_TIMEOUT_SECONDS,
        )
        await self.set_up_workflows()

    async def set_up_workflows(self) -> None:
        """Import the benchmark's workflows (`import_workflow`); the server runs meanwhile."""
        raise NotImplementedError

    @property
    def api(self) -> httpx.AsyncClient:
        if self._api is None:
            raise RuntimeError("the server is not set up")
        return self._api

    async def import_workflow(self, document: dict[str, Any]) -> str:
        """Import and publish a workflow document; its id."""
        answer = await self.api.post("/workflows/import", params={"publish": "true"}, json=document)
        if answer.status_code != 201:
            raise RuntimeError(f"workflow import: {answer.status_code} {answer.text[:500]}")
        return str(answer.json()["id"])

    async def run_workflow(self, workflow_id: str, trigger: dict[str, Any]) -> uuid.UUID:
        """Start a manual run with `trigger` as its input; the execution's id."""
        answer = await self.api.post(f"/workflows/{workflow_id}/run", json={"input": trigger})
        if answer.status_code != 202:
            raise RuntimeError(f"run: {answer.status_code} {answer.text[:500]}")
        return uuid.UUID(answer.json()["execution_id"])

    async def wait_finished(
        self, ids: list[uuid.UUID], poll_s: float, timeout_s: float = FINISH_TIMEOUT_SECONDS
    ) -> None:
        """Until every execution of `ids` has ended (`timeout_s` at most)."""
        async with asyncio.timeout(timeout_s):
            # Polled, not notified: the runtime announces no finished execution.
            while True:
                if not await self._connection.fetchval(UNFINISHED, ids):
                    return
                await asyncio.sleep(poll_s)
