"""Switchyard in the end-to-end benchmark: `switchyard run` as a child process, set up over HTTP.

The server runs the api and worker roles (no scheduler: nothing here is scheduled) in one
process on a free loopback port, against a fresh `bench_switchyard` database, with logs at
WARNING (per-event INFO lines would measure the log pipe). Set-up goes through the public REST
API as a user would: a webhook endpoint with Standard Webhooks (`hmac_sha256`) auth and an
async answer on trigger key `bench`, then the three-step workflow imported and published with a
subscription to that key. Each request is signed here, independently of the server's code:
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed with the base64 part
of the `whsec_` secret. Executions are counted in `workflow_execution`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import msgspec

from bench.e2e_common import Server, Tally, database_pids, tally_of
from bench.e2e_load import Request
from bench.e2e_processes import HOST, free_port, start_process, stop_process, wait_until_ready
from bench.queue_common import fresh_database
from config.settings import Settings

DATABASE: Final = "bench_switchyard"
TRIGGER_KEY: Final = "bench"
HOOK_PATH: Final = "bench"
# Tried on 2 cores (2026-11-27, 20 s per level, executions/s in the window at 8 / 32 clients;
# runs vary by 10-15%): worker slots 128 / pool 24: 235-238 / 182-197, the cheap intake
# outrunning the worker at 32 clients (a backlog of 7-8 s drains after the load); 256 / 32:
# 237-239 / 194-226, intake and worker in balance (backlog 1.5-3 s) at the price of a longer
# answer p99 at 32 clients. One event loop runs the API and the worker: the slots are the
# worker's share of the loop and of the pool against `concurrency` pending webhooks.
DEFAULT_WORKER_CONCURRENCY: Final = 256
DEFAULT_POOL_SIZE: Final = 32

WORKFLOW: Final[dict[str, Any]] = {
    "name": "Benchmark: webhook lead routing",
    "description": "condition -> task_management create -> set_variables (bench/e2e.py)",
    "steps": [
        {"key": "hot", "kind": "condition", "cfg": {"expression": "trigger.score >= 50"}},
        {
            "key": "task",
            "kind": "action",
            "action_key": "task_management",
            "cfg": {"operation": "create", "title": "Call {{ trigger.name }}"},
        },
        {
            "key": "routed",
            "kind": "action",
            "action_key": "set_variables",
            "cfg": {"values": {"routed": "hot", "name": "{{ trigger.name }}"}},
        },
    ],
    "edges": [
        {"from": "hot", "to": "task", "branch_key": "true"},
        {"from": "task", "to": "routed", "branch_key": "default"},
    ],
    "subscriptions": [{"trigger_key": TRIGGER_KEY, "filter_conditions": {}}],
}

TALLY: Final = """
SELECT count(*) FILTER (WHERE status = 'SUCCESS') AS succeeded,
       count(*) FILTER (WHERE status IN ('FAILED', 'CANCELLED')) AS failed,
       count(*) FILTER (WHERE status NOT IN ('SUCCESS', 'FAILED', 'CANCELLED')) AS unfinished,
       max(finished_at) AS last_finished_at
FROM workflow_execution WHERE created_at >= $1
"""
# Every step recorded: three successful step rows and the task the workflow created.
UNRECORDED: Final = """
SELECT count(*) FROM workflow_execution e
WHERE e.created_at >= $1 AND e.status = 'SUCCESS'
  AND ((SELECT count(*) FROM step_execution s WHERE s.execution_id = e.id AND s.status = 'SUCCESS')
       <> 3 OR NOT EXISTS (SELECT 1 FROM tasks t WHERE t.execution_id = e.id))
"""
SUCCEEDED_BETWEEN: Final = """
SELECT count(*) FROM workflow_execution
WHERE status = 'SUCCESS' AND finished_at >= $1 AND finished_at <= $2
"""


def lead_fields(number: int) -> dict[str, Any]:
    """A hot lead (score >= 50 runs every step), as the benchmarks send it to both systems."""
    return {"name": f"Lead {number}", "email": f"lead{number}@example.com", "score": 75}


def lead(number: int) -> bytes:
    """The webhook body both systems receive."""
    return msgspec.json.encode(lead_fields(number))


def standard_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class SwitchyardServer(Server):
    name = "switchyard"
    accepted_statuses = frozenset({202})  # 200 would be a replayed delivery
    health_path = "/health"

    def __init__(
        self,
        *,
        worker_concurrency: int,
        pool_size: int,
        worker_processes: int,
        main_roles: str = "api,worker",
        target_lag: float | None = None,
        otlp_endpoint: str | None = None,
    ) -> None:
        self.worker_concurrency = worker_concurrency
        self.otlp_endpoint = otlp_endpoint  # None: tracing off
        self.pool_size = pool_size
        self.worker_processes = worker_processes
        self.main_roles = main_roles
        self.target_lag = target_lag  # None: Switchyard's default
        self.port = free_port()
        self._secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self._run_id = secrets.token_hex(4)
        self._pids: list[int] = []

    @asynccontextmanager
    async def running(self, admin_dsn: str, run_dir: Path) -> AsyncIterator[None]:
        dsn = await fresh_database(admin_dsn, DATABASE)
        token = secrets.token_urlsafe(24)
        data_dir = run_dir / "switchyard-data"
        data_dir.mkdir()
        # The caller's environment less every Switchyard setting, then the benchmark's.
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.__struct_fields__}
        env |= {
            "DATABASE_URL": dsn,
            "API_TOKENS": token,
            "ENCRYPTION_KEYS": "bench:" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "DATA_DIR": str(data_dir),
            "ROLES": self.main_roles,
            "HOST": HOST,
            "PORT": str(self.port),
            "WORKER_CONCURRENCY": str(self.worker_concurrency),
            "DB_POOL_MIN_SIZE": str(min(4, self.pool_size)),
            "DB_POOL_MAX_SIZE": str(self.pool_size),
            "LOG_LEVEL": "WARNING",
            "SHUTDOWN_GRACE_SECONDS": "5",
        }
        if self.target_lag is not None:
            env["WORKER_TARGET_LAG_SECONDS"] = str(self.target_lag)
        if self.otlp_endpoint is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.otlp_endpoint
        async with AsyncExitStack() as stack:
            await self._start(stack, env, run_dir / "switchyard.log")
            # Extra worker-only replicas (--worker-processes): the migrations are done by now.
            for number in range(self.worker_processes):
                replica = env | {"ROLES": "worker", "PORT": str(free_port())}
                await self._start(stack, replica, run_dir / f"switchyard-worker-{number + 1}.log")
            self._connection: asyncpg.Connection = await asyncpg.connect(dsn)
            stack.push_async_callback(self._connection.close)
            await self._set_up(f"http://{HOST}:{self.port}", token)
            yield

    async def _start(self, stack: AsyncExitStack, env: dict[str, str], log_path: Path) -> None:
        process = await start_process(switchyard_command(), env, log_path)
        stack.push_async_callback(stop_process, process, self.name)
        self._pids.append(process.pid)
        await wait_until_ready(process, f"http://{HOST}:{env['PORT']}/ready", log_path, self.name)

    async def _set_up(self, base: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"{base}/api/v1", headers=headers) as api:
            webhook = {
                "trigger_key": TRIGGER_KEY,
                "path": HOOK_PATH,
                "auth": {"type": "hmac_sha256", "secret": self._secret},
                "response_mode": "async",
            }
            answer = await api.post("/webhooks", json=webhook)
            if answer.status_code != 201:
                raise RuntimeError(f"POST /webhooks: {answer.status_code} {answer.text[:500]}")
            answer = await api.post("/workflows/import", params={"publish": "true"}, json=WORKFLOW)
            if answer.status_code != 201:
                raise RuntimeError(f"workflow import: {answer.status_code} {answer.text[:500]}")

    def request(self, phase: str, number: int) -> Request:
        body = lead(number)
        message_id = f"msg_{self._run_id}_{phase}_{number}"
        timestamp = str(int(time.time()))
        return Request(
            path=f"/hooks/{HOOK_PATH}",
            headers={
                "Content-Type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": timestamp,
                "webhook-signature": standard_signature(self._secret, message_id, timestamp, body),
            },
            body=body,
        )

    def process_ids(self) -> list[int]:
        return list(self._pids)

    async def database_pids(self) -> list[int]:
        return await database_pids(self._connection)

    async def tally(self, since: dt.datetime) -> Tally:
        return tally_of(await self._connection.fetchrow(TALLY, since))

    async def unrecorded(self, since: dt.datetime) -> int:
        return int(await self._connection.fetchval(UNRECORDED, since))

    async def succeeded_between(self, start: dt.datetime, end: dt.datetime) -> int:
        return int(await self._connection.fetchval(SUCCEEDED_BETWEEN, start, end))


def switchyard_command() -> list[str]:
    """`switchyard run` from this virtualenv (the console script next to the interpreter)."""
    script = Path(sys.executable).with_name("switchyard")
    if script.exists():
        return [str(script), "run"]
    return [sys.executable, "-m", "server", "run"]
