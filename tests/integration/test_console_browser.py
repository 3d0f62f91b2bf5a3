"""The operator console in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright) against a `switchyard run` process with every role on loopback, while every
request to another host is refused. An operator signs in, finds a failed run's failing step
highlighted with its error, retries it after the cause is fixed and watches it succeed
(the page refreshes its status by itself), cancels a waiting run, requeues a dead job and
signs out; a form without the CSRF token is refused; a revoked token's session ends.
Skipped where Chromium is not installed (`apt-get install chromium`; .ci/run installs it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Page, expect

from tests.support.browser import CHROMIUM, offline_page
from tests.support.peers import HttpPeer
from tests.support.processes import ServerProcess, environment, switchyard_run

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed"),
    pytest.mark.timeout(120),
]

TOKEN = "console-browser-token-0123"
WAIT_MS = 20_000
NO_RETRY = {"max_attempts": 1}


@pytest.fixture
def console_server(database_dsn: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = environment(
        DATABASE_URL=database_dsn,
        API_TOKENS=TOKEN,
        HTTP_ALLOWED_HOSTS="127.0.0.1",
        JOB_POLL_INTERVAL_SECONDS="0.2",
    )
    with switchyard_run([], env, tmp_path) as server:
        server.wait_ready()
        yield server


@pytest.fixture
async def api(console_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=console_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ) as client:
        yield client


@pytest.fixture
async def browser_page(console_server: ServerProcess) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page whose requests to any host but the server's are aborted (and recorded)."""
    viewport = {"width": 1280, "height": 900}
    async with offline_page(console_server.url, viewport=viewport) as (page, refused):
        page.set_default_timeout(WAIT_MS)
        page.on("dialog", lambda dialog: dialog.accept())
        yield page, refused


async def sign_in(page: Page, server: ServerProcess, token: str = TOKEN) -> None:
    await page.goto(server.url + "/console/login")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Executions")).to_be_visible()


async def import_published(api: httpx.AsyncClient, document: dict[str, Any]) -> str:
    response = await api.post("/workflows/import", params={"publish": "true"}, json=document)
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


async def run(api: httpx.AsyncClient, workflow_id: str) -> str:
    response = await api.post(f"/workflows/{workflow_id}/run", json={"input": {}})
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


async def test_an_operator_finds_a_failed_run_fixes_it_and_watches_the_retry_succeed(
    console_server: ServerProcess,
    api: httpx.AsyncClient,
    browser_page: tuple[Page, list[str]],
    http_peer: HttpPeer,
) -> None:
    page, refused = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    http_peer.reply("/partner", status=500, json={"error": "partner is down"})
    workflow_id = await import_published(
        api,
        {
            "name": "Notify partner",
            "steps": [
                {"key": "shape", "kind": "action", "action_key": "transform",
                 "cfg": {"output": {"n": 1}, "retry": NO_RETRY}},
                {"key": "notify", "kind": "action", "action_key": "http_request",
                 "cfg": {"method": "POST", "url": f"{http_peer.base_url}/partner",
                         "json": "{{ steps.shape.output }}", "retry": NO_RETRY}},
            ],
            "edges": [{"from": "shape", "to": "notify"}],
        },
    )  # fmt: skip
    execution_id = await run(api, workflow_id)
    await sign_in(page, console_server)

    await page.get_by_label("Status").select_option("FAILED")
    await page.get_by_role("button", name="Filter").click()
    row = page.locator(f'tr[data-execution-id="{execution_id}"]')
    await expect(row).to_have_attribute("data-status", "FAILED")  # the list refreshes itself
    await row.get_by_role("link").first.click()

    failing = page.locator('svg [data-step-key="notify"]')
    await expect(failing).to_have_attribute("data-status", "FAILED")
    await expect(failing).to_have_attribute("data-kind", "action")
    await expect(page.locator('svg [data-step-key="shape"]')).to_have_attribute(
        "data-status", "SUCCESS"
    )
    await expect(page.locator("#step-notify [data-role=step-error]")).to_contain_text("500")

    http_peer.reply("/partner", status=200, json={"ok": True})  # the partner is back
    await page.get_by_role("button", name="Retry failed steps").click()
    await expect(page.get_by_role("status")).to_contain_text("Retrying")
    await expect(failing).to_have_attribute("data-status", "SUCCESS")
    await expect(page.locator("h1 .badge")).to_have_text("SUCCESS")
    attempts = page.locator('.timeline [data-attempt-of="notify"]')
    await expect(attempts).to_have_count(2)
    assert refused == []
    assert errors == []


async def test_an_operator_cancels_a_waiting_run_and_requeues_a_dead_job(
    console_server: ServerProcess,
    api: httpx.AsyncClient,
    browser_page: tuple[Page, list[str]],
    database_dsn: str,
) -> None:
    page, refused = browser_page
    workflow_id = await import_published(
        api, {"name": "Wait", "steps": [{"key": "pause", "kind": "delay", "cfg": {"seconds": 900}}]}
    )
    execution_id = await run(api, workflow_id)
    await sign_in(page, console_server)
    await page.goto(f"{console_server.url}/console/executions/{execution_id}")
    await expect(page.locator('svg [data-step-key="pause"]')).to_have_attribute(
        "data-status", "WAITING"
    )
    await page.get_by_role("button", name="Cancel run").click()
    await expect(page.locator("h1 .badge")).to_have_text("CANCELLED")
    assert (await api.get(f"/executions/{execution_id}")).json()["status"] == "CANCELLED"

    connection = await asyncpg.connect(database_dsn)
    try:
        job_id = await connection.fetchval(
            "INSERT INTO job (kind, payload, state, attempts, max_attempts, last_error) "
            "VALUES ('console_probe', '{}'::jsonb, 'dead', 1, 1, 'gave up: partner refused') "
            "RETURNING id"
        )
    finally:
        await connection.close()
    await page.get_by_role("link", name="Dead jobs").click()
    await expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_contain_text("partner refused")
    await page.get_by_role("button", name=f"Requeue job {job_id}").click()
    await expect(page.get_by_role("status")).to_have_text(f"Job {job_id} is queued again.")
    connection = await asyncpg.connect(database_dsn)
    try:  # the worker may claim it again at once (no handler knows the kind): it was re-queued
        assert await connection.fetchval("SELECT max_attempts FROM job WHERE id = $1", job_id) > 1
    finally:
        await connection.close()

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("status")).to_have_text("You are signed out.")
    await page.goto(f"{console_server.url}/console/jobs/dead")
    await expect(page.get_by_label("API token")).to_be_visible()
    assert refused == []


async def test_forms_without_the_csrf_token_are_refused(
    console_server: ServerProcess, api: httpx.AsyncClient, browser_page: tuple[Page, list[str]]
) -> None:
    page, _ = browser_page
    workflow_id = await import_published(
        api, {"name": "Wait", "steps": [{"key": "pause", "kind": "delay", "cfg": {"seconds": 900}}]}
    )
    execution_id = await run(api, workflow_id)
    await sign_in(page, console_server)
    await page.goto(f"{console_server.url}/console/executions/{execution_id}")
    await page.locator("form[action$='/cancel'] input[name=csrf_token]").evaluate(
        "field => field.value = 'forged'"
    )
    await page.get_by_role("button", name="Cancel run").click()
    await expect(page.get_by_role("heading", name="Request refused (403)")).to_be_visible()
    # A raw POST with the session cookie but no token is refused the same way.
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    async with httpx.AsyncClient(cookies=cookies) as raw_client:
        raw = await raw_client.post(
            f"{console_server.url}/console/executions/{execution_id}/cancel", data={}
        )
    assert raw.status_code == 403
    assert "CSRF token is missing" in raw.text
    assert (await api.get(f"/executions/{execution_id}")).json()["status"] == "WAITING"


async def test_a_revoked_token_ends_the_browser_session(
    console_server: ServerProcess, api: httpx.AsyncClient, browser_page: tuple[Page, list[str]]
) -> None:
    page, _ = browser_page
    created = (await api.post("/tokens", json={"name": "operator"})).json()
    await sign_in(page, console_server, created["token"])
    await page.get_by_role("link", name="Workflows").click()
    await expect(page.get_by_role("heading", name="Workflows")).to_be_visible()
    assert (await api.delete(f"/tokens/{created['id']}")).status_code == 204
    await page.get_by_role("link", name="Triggers").click()
    await expect(page.get_by_label("API token")).to_be_visible()
    assert "/console/login" in page.url
