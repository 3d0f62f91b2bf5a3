"""n8n as the end-to-end benchmark's peer: installed from the npm registry once, run on loopback.

n8n (N8N_VERSION, the newest release that runs on Node 20) is installed into a cache folder
outside the repository (`~/.cache/switchyard-bench/n8n` by default) on first use and reused
afterwards; a wrapper package.json pins it and overrides `xlsx` (its own dependency points to a
tarball outside the registry), and `npm_config_nodedir` lets `sqlite3` build against the local
Node headers. Each run gets a fresh user folder and a fresh `bench_n8n` database (n8n's
PostgreSQL backend, executions saved on success and on error, as ours always are). The
equivalent workflow (Webhook -> IF -> Set, answering as soon as the webhook is received) is
imported and published with n8n's CLI while n8n is stopped, then `n8n start` serves it on
127.0.0.1 with diagnostics, version checks, templates and other calls home switched off.
Executions are counted in its `execution_entity` table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import asyncpg

from bench import n8n_workflows
from bench.e2e_common import Say, Server, Tally, database_pids, tally_of
from bench.e2e_load import Request
from bench.e2e_processes import (
    HOST,
    free_port,
    run_command,
    start_process,
    stop_process,
    wait_until_ready,
)
from bench.e2e_switchyard import HOOK_PATH, lead
from bench.queue_common import fresh_database

N8N_VERSION: Final = "2.8.4"
DEFAULT_CACHE: Final = Path.home() / ".cache" / "switchyard-bench" / "n8n"
DATABASE: Final = "bench_n8n"
WORKFLOW_ID: Final = "swyBenchWebhook1"  # n8n ids are 16 letters and digits
# n8n's default pool is 2 connections; 10 serves it better under load (see README).
DEFAULT_POOL_SIZE: Final = 10

WRAPPER_PACKAGE: Final = {
    "name": "switchyard-bench-n8n",
    "private": True,
    "version": "0.0.0",
    "dependencies": {"n8n": N8N_VERSION},
    "overrides": {"xlsx": "0.18.5"},
}
# Loopback only, nothing phoned home, no UI extras; the rest is n8n's defaults (regular mode).
QUIET_ENV: Final = {
    "N8N_HOST": HOST,
    "N8N_LISTEN_ADDRESS": HOST,
    "N8N_RUNNERS_BROKER_LISTEN_ADDRESS": HOST,
    "N8N_DIAGNOSTICS_ENABLED": "false",
    "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
    "N8N_TEMPLATES_ENABLED": "false",
    "N8N_PERSONALIZATION_ENABLED": "false",
    "N8N_DYNAMIC_BANNERS_ENABLED": "false",
    "N8N_AI_ENABLED": "false",
    "N8N_COMMUNITY_PACKAGES_ENABLED": "false",
    "N8N_LICENSE_AUTO_RENEW_ENABLED": "false",
    "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "true",
    "EXECUTIONS_DATA_SAVE_ON_SUCCESS": "all",
    "EXECUTIONS_DATA_SAVE_ON_ERROR": "all",
    "N8N_LOG_LEVEL": "warn",
}

TALLY: Final = """
SELECT count(*) FILTER (WHERE status = 'success') AS succeeded,
       count(*) FILTER (WHERE status IN ('error', 'crashed', 'canceled')) AS failed,
       count(*) FILTER (WHERE status NOT IN ('success', 'error', 'crashed', 'canceled'))
         AS unfinished,
       max("stoppedAt") AS last_finished_at
FROM execution_entity WHERE "workflowId" = $1 AND "createdAt" >= $2
"""
# Executions saved with their data, the Set node's run in it (names are strings in its JSON).
UNRECORDED: Final = """
SELECT count(*) FROM execution_entity e LEFT JOIN execution_data d ON d."executionId" = e.id
WHERE e."workflowId" = $1 AND e."createdAt" >= $2 AND e.status = 'success'
  AND (d."executionId" IS NULL OR position('"Set"' in d.data) = 0)
"""
SUCCEEDED_BETWEEN: Final = """
SELECT count(*) FROM execution_entity
WHERE "workflowId" = $1 AND status = 'success' AND "stoppedAt" >= $2 AND "stoppedAt" <= $3
"""


def workflow() -> dict[str, Any]:
    """Webhook (answers on receipt) -> IF score >= 50 -> Set, the peer of our three steps."""
    return n8n_workflows.workflow(
        WORKFLOW_ID,
        "Benchmark: webhook lead routing",
        [
            n8n_workflows.webhook(HOOK_PATH),
            n8n_workflows.hot_lead("$json.body.score"),
            n8n_workflows.assign("Set", {"routed": "hot", "name": "={{ $json.body.name }}"}),
        ],
        [("Webhook", 0, "If"), ("If", 0, "Set")],
        number=1,
    )


class N8nServer(Server):
    name = "n8n"
    accepted_statuses = frozenset({200})
    health_path = "/healthz"

    def __init__(self, *, cache: Path, pool_size: int, say: Say) -> None:
        self.cache = cache
        self.pool_size = pool_size
        self.port = free_port()
        self._say = say
        self._pid = 0

    @asynccontextmanager
    async def running(self, admin_dsn: str, run_dir: Path) -> AsyncIterator[None]:
        n8n = await ensure_installed(self.cache, self._say)
        dsn = await fresh_database(admin_dsn, DATABASE)
        env = self._environment(dsn, run_dir)
        workflows = self.workflows()
        document = run_dir / "n8n-workflows.json"
        document.write_text(json.dumps(workflows))
        log_path = run_dir / "n8n.log"
        self._say(f"n8n: importing and publishing {len(workflows)} workflow(s) (n8n stopped)")
        await run_command([str(n8n), "import:workflow", f"--input={document}"], env, log_path)
        for published in workflows:
            await run_command(
                [str(n8n), "publish:workflow", f"--id={published['id']}"], env, log_path
            )
        process = await start_process([str(n8n), "start"], env, log_path)
        self._pid = process.pid
        self._connection: asyncpg.Connection = await asyncpg.connect(dsn)
        try:
            await wait_until_ready(process, f"http://{HOST}:{self.port}/healthz", log_path, "n8n")
            yield
        finally:
            await self._connection.close()
            await stop_process(process, self.name)

    def workflows(self) -> list[dict[str, Any]]:
        """The workflows imported and published before n8n starts."""
        return [workflow()]

    def _environment(self, dsn: str, run_dir: Path) -> dict[str, str]:
        parts = urlsplit(dsn)
        user_folder = run_dir / "n8n-user"
        user_folder.mkdir()
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("N8N_", "DB_"))},
            **QUIET_ENV,
            "N8N_USER_FOLDER": str(user_folder),
            "N8N_PORT": str(self.port),
            "N8N_RUNNERS_BROKER_PORT": str(free_port()),
            "DB_TYPE": "postgresdb",
            "DB_POSTGRESDB_HOST": parts.hostname or HOST,
            "DB_POSTGRESDB_PORT": str(parts.port or 5432),
            "DB_POSTGRESDB_DATABASE": DATABASE,
            "DB_POSTGRESDB_USER": unquote(parts.username or "postgres"),
            "DB_POSTGRESDB_PASSWORD": unquote(parts.password or ""),
            "DB_POSTGRESDB_POOL_SIZE": str(self.pool_size),
        }

    def request(self, phase: str, number: int) -> Request:
        return Request(
            path=f"/webhook/{HOOK_PATH}",
            headers={"Content-Type": "application/json"},
            body=lead(number),
        )

    def process_ids(self) -> list[int]:
        return [self._pid]

    async def database_pids(self) -> list[int]:
        return await database_pids(self._connection)

    async def tally(self, since: dt.datetime) -> Tally:
        return tally_of(await self._connection.fetchrow(TALLY, WORKFLOW_ID, since))

    async def unrecorded(self, since: dt.datetime) -> int:
        return int(await self._connection.fetchval(UNRECORDED, WORKFLOW_ID, since))

    async def succeeded_between(self, start: dt.datetime, end: dt.datetime) -> int:
        return int(await self._connection.fetchval(SUCCEEDED_BETWEEN, WORKFLOW_ID, start, end))


async def ensure_installed(cache: Path, say: Say) -> Path:
    """The `n8n` executable of N8N_VERSION in `cache`, installed from the registry if missing."""
    executable = cache / "node_modules" / ".bin" / "n8n"
    if installed_version(cache) == N8N_VERSION:
        return executable
    say(f"installing n8n {N8N_VERSION} into {cache} (once; about 3 minutes, 2.2 GB)")
    npm, env = prepare_install(cache)
    await run_command(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        env,
        cache / "install.log",
        cwd=cache,
    )
    return executable


def installed_version(cache: Path) -> str | None:
    manifest = cache / "node_modules" / "n8n" / "package.json"
    if not (cache / "node_modules" / ".bin" / "n8n").exists() or not manifest.exists():
        return None
    version = json.loads(manifest.read_text()).get("version")
    return version if isinstance(version, str) else None


def prepare_install(cache: Path) -> tuple[str, dict[str, str]]:
    """Write the wrapper package.json; npm's path and the environment to install with."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("n8n needs Node.js 20 and npm on PATH (or run with --no-peer)")
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "package.json").write_text(json.dumps(WRAPPER_PACKAGE, indent=2) + "\n")
    executable = subprocess.run(  # noqa: S603 - a fixed command found on PATH
        [node, "-p", "process.execPath"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # node-gyp builds sqlite3 against the running Node's headers instead of downloading them;
    # SCARF_ANALYTICS=false keeps one dependency's install script from phoning home.
    node_prefix = Path(executable).resolve().parent.parent
    return npm, {**os.environ, "npm_config_nodedir": str(node_prefix), "SCARF_ANALYTICS": "false"}
