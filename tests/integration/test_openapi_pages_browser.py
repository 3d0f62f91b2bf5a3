"""The OpenAPI pages render in a real browser with no network but this server: headless
Chromium (Debian's `chromium`, driven by Playwright) loads /schema/swagger and /schema/redoc
from a `switchyard run` process on loopback while every request to another host is refused.
Skipped where Chromium is not installed (`apt-get install chromium`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page

from tests.support.browser import CHROMIUM, offline_page
from tests.support.processes import ServerProcess, environment, switchyard_run

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

RENDER_TIMEOUT_MS = 20_000
# ReDoc's bundle shows Redocly's logo from its CDN under the menu and removes the image when it
# cannot load: decorative, so the one outside request tolerated (and refused here).
REDOC_ATTRIBUTION_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture
def docs_server(database_dsn: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = environment(DATABASE_URL=database_dsn, API_TOKENS="browser-test-token-0123")
    with switchyard_run(["--roles", "api"], env, tmp_path) as server:
        server.wait_ready()
        yield server


@pytest.fixture
async def offline_page_of_server(
    docs_server: ServerProcess,
) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page whose requests to any host but the server's are aborted (and recorded)."""
    async with offline_page(docs_server.url) as opened:
        yield opened


@pytest.mark.timeout(90)
async def test_swagger_ui_renders_the_operations_offline(
    docs_server: ServerProcess, offline_page_of_server: tuple[Page, list[str]]
) -> None:
    page, refused = offline_page_of_server
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(docs_server.url + "/schema/swagger")
    operations = page.locator(".opblock-summary-path")
    await operations.first.wait_for(timeout=RENDER_TIMEOUT_MS)
    paths = set(await operations.all_inner_texts())
    assert any("/api/v1/workflows" in path for path in paths), paths
    assert refused == []
    assert errors == []


@pytest.mark.timeout(90)
async def test_redoc_renders_the_operations_offline(
    docs_server: ServerProcess, offline_page_of_server: tuple[Page, list[str]]
) -> None:
    page, refused = offline_page_of_server
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(docs_server.url + "/schema/redoc")
    operation = page.locator("[data-section-id^='operation/']")
    await operation.first.wait_for(state="attached", timeout=RENDER_TIMEOUT_MS)
    assert await operation.count() > 10
    assert set(refused) <= {REDOC_ATTRIBUTION_LOGO}
    assert errors == []
