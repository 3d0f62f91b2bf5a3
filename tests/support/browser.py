"""Headless Chromium (Debian's `chromium`, driven by Playwright) kept to one server: every
request to another host is aborted and recorded, so a test can assert the page needed none."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Page, Route, async_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@asynccontextmanager
async def offline_page(
    server_url: str, **page_options: Any
) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page of a fresh browser, and the URLs it was refused (any host but `server_url`'s)."""
    refused: list[str] = []
    own_host = urlsplit(server_url).netloc

    async def only_this_server(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own_host:
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(**page_options)
            await page.route("**/*", only_this_server)
            yield page, refused
        finally:
            await browser.close()
