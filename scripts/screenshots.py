"""Screenshots of the operator console for the README: `make screenshots`.

Starts the embedded PostgreSQL and a `switchyard run` process (every role) in a temporary
folder, loads sample data through the API (a lead workflow with branches, a 24-step workflow
with joins, a run that fails on a partner answering 500, a run waiting on a delay, a webhook,
a schedule, a dead job), signs in with headless Chromium (Debian's `chromium`, driven by
Playwright) and writes `docs/screenshots/*.png`. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
from playwright.async_api import Page, async_playwright

from server.db.embedded import embedded_postgres
from tests.support.processes import ServerProcess, environment, free_port, switchyard_run

TOKEN: Final = "console-screenshots-token"  # noqa: S105 - a throwaway local token
OUTPUT: Final = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DESKTOP: Final = {"width": 1280, "height": 860}
PHONE: Final = {"width": 390, "height": 844}


@contextmanager
def partner(status: int) -> Iterator[str]:
    """A loopback HTTP server answering every POST with `status`: the failing partner."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def chain(name: str, size: int) -> dict[str, Any]:
    """A workflow of `size` steps: a chain with a condition every 8 steps and joins."""
    steps: list[dict[str, Any]] = []
    edges: list[dict[str, str]] = []
    for n in range(size):
        kind = "condition" if n % 8 == 3 else "action"
        step: dict[str, Any] = {"key": f"step_{n:02d}", "kind": kind}
        if kind == "condition":
            step["cfg"] = {"expression": "trigger.n > 1"}
        else:
            step.update(action_key="transform", cfg={"output": {"n": n}})
        steps.append(step)
    for n in range(1, size):
        source = f"step_{n - 1:02d}"
        if (n - 1) % 8 == 3 and n + 1 < size:
            edges.append({"from": source, "to": f"step_{n:02d}", "branch_key": "true"})
            edges.append({"from": source, "to": f"step_{n + 1:02d}", "branch_key": "false"})
        else:
            edges.append({"from": source, "to": f"step_{n:02d}"})
    return {"name": name, "description": "Shows a larger graph", "steps": steps, "edges": edges}


LEADS: Final = {
    "name": "Lead processing",
    "description": "Route new leads",
    "steps": [
        {"key": "hot", "kind": "condition", "cfg": {"expression": "trigger.score >= 50"}},
        {"key": "task", "kind": "action", "action_key": "task_management",
         "cfg": {"operation": "create", "title": "Call {{ trigger.name }}"}},
        {"key": "later", "kind": "delay", "cfg": {"seconds": 3600}},
    ],
    "edges": [{"from": "hot", "to": "task", "branch_key": "true"},
              {"from": "hot", "to": "later", "branch_key": "false"}],
    "subscriptions": [{"trigger_key": "lead-intake", "filter_conditions": {}}],
}  # fmt: skip


def notify(url: str) -> dict[str, Any]:
    return {
        "name": "Notify partner",
        "steps": [
            {"key": "shape", "kind": "action", "action_key": "transform",
             "cfg": {"output": {"order": "{{ trigger.order }}"}}},
            {"key": "notify", "kind": "action", "action_key": "http_request",
             "cfg": {"method": "POST", "url": f"{url}/orders", "json": "{{ steps.shape.output }}",
                     "retry": {"max_attempts": 3, "backoff_seconds": 0.2}}},
            {"key": "record", "kind": "action", "action_key": "task_management",
             "cfg": {"operation": "create", "title": "Order {{ trigger.order }} sent"}},
        ],
        "edges": [{"from": "shape", "to": "notify"}, {"from": "notify", "to": "record"}],
    }  # fmt: skip


def seed(api: httpx.Client, partner_url: str) -> dict[str, str]:
    def ok(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            sys.exit(f"seeding failed: {response.request.url} answered {response.text}")
        return response.json() if response.content else None

    ok(api.post("/registry/triggers", json={"trigger_key": "lead-intake", "type": "event"}))
    publish = {"publish": "true"}
    leads = ok(api.post("/workflows/import", params=publish, json=LEADS))["id"]
    big = ok(api.post("/workflows/import", params=publish, json=chain("Nightly sync", 24)))["id"]
    failing = ok(api.post("/workflows/import", params=publish, json=notify(partner_url)))["id"]
    ok(api.post("/webhooks", json={"trigger_key": "orders", "path": "orders",
                                   "auth": {"type": "hmac_sha256"}}))  # fmt: skip
    ok(api.post("/schedules", json={"trigger_key": "nightly", "cron": "0 3 * * *"}))
    for name, score in (("Ann", 70), ("Bo", 20), ("Cy", 90)):
        ok(api.post("/events", json={"trigger_key": "lead-intake",
                                     "payload": {"name": name, "score": score}}))  # fmt: skip
    for n in range(3):
        ok(api.post(f"/workflows/{big}/run", json={"input": {"n": n}}))
    failed = ok(api.post(f"/workflows/{failing}/run", json={"input": {"order": 1042}}))
    return {"failed": failed["execution_id"], "workflow": big, "leads": leads}


def wait_until_failed(api: httpx.Client, execution_id: str) -> None:
    deadline = time.monotonic() + 30
    while api.get(f"/executions/{execution_id}").json()["status"] != "FAILED":
        if time.monotonic() > deadline:
            sys.exit(f"execution {execution_id} did not fail in time")
        time.sleep(0.2)


async def add_dead_job(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO job (kind, payload, state, attempts, max_attempts, last_error) VALUES "
            "('step', '{}'::jsonb, 'dead', 5, 5, 'worker lost its lease 5 times: out of memory')"
        )
    finally:
        await connection.close()


async def shoot(server: ServerProcess, ids: dict[str, str], chromium: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = await browser.new_page(viewport=DESKTOP)  # type: ignore[arg-type]
        await page.goto(server.url + "/console/login")
        await save(page, "login")
        await page.get_by_label("API token").fill(TOKEN)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url("**/console/executions")
        await save(page, "executions")
        await page.goto(f"{server.url}/console/executions/{ids['failed']}")
        await save(page, "execution-failed", full_page=True)
        await page.goto(f"{server.url}/console/workflows/{ids['workflow']}")
        await save(page, "workflow", full_page=True)
        await page.goto(f"{server.url}/console/workflows")
        await save(page, "workflows")
        await page.goto(f"{server.url}/console/triggers")
        await save(page, "triggers")
        await page.goto(f"{server.url}/console/jobs/dead")
        await save(page, "dead-jobs")
        await page.set_viewport_size(PHONE)  # type: ignore[arg-type]
        await page.goto(f"{server.url}/console/executions")
        await save(page, "executions-phone")
        await browser.close()


async def save(page: Page, name: str, *, full_page: bool = False) -> None:
    path = OUTPUT / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    print(f"wrote {path.relative_to(OUTPUT.parent.parent)}")


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed: apt-get install chromium")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="screenshots-", dir=".") as folder,
        embedded_postgres(Path(folder).resolve() / "pg") as dsn,
        partner(500) as partner_url,
    ):
        env = environment(DATABASE_URL=dsn, API_TOKENS=TOKEN, HTTP_ALLOWED_HOSTS="127.0.0.1")
        with switchyard_run([], env, Path(folder).resolve() / "data") as server:
            server.wait_ready()
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=server.url + "/api/v1", headers=headers) as api:
                ids = seed(api, partner_url)
                wait_until_failed(api, ids["failed"])
            asyncio.run(add_dead_job(dsn))
            asyncio.run(shoot(server, ids, chromium))


if __name__ == "__main__":
    main()
