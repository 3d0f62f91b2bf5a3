"""The OpenAPI pages load everything from this server: they work offline and behind a CSP."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from server.api.docs import STATIC_FOLDER

PAGES = ("/schema", "/schema/swagger", "/schema/redoc")
# src= and href= of <script>, <link>, <img>, ... as Litestar's templates write them.
ASSET_REFERENCE = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")
CONTENT_TYPES = {
    ".js": {"text/javascript", "application/javascript"},
    ".css": {"text/css"},
    ".png": {"image/png"},
}


def _references(page: httpx.Response) -> list[str]:
    return ASSET_REFERENCE.findall(page.text)


@pytest.mark.parametrize("page", PAGES)
async def test_the_pages_reference_only_assets_of_this_server(
    api_client: httpx.AsyncClient, page: str
) -> None:
    response = await api_client.get(page, headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    references = _references(response)
    assert references, "the page loads no script"
    for reference in references:
        absolute = urljoin(str(response.url), reference)
        assert urlsplit(absolute).netloc == response.url.host, reference
        assert urlsplit(absolute).path.startswith("/schema/assets/"), reference
    assert "fonts.googleapis.com" not in response.text
    assert "cdn." not in response.text


@pytest.mark.parametrize("page", PAGES)
async def test_every_asset_a_page_references_is_served_with_its_type(
    api_client: httpx.AsyncClient, page: str
) -> None:
    api_client.headers.pop("Authorization")  # the pages and assets are public, like the schema
    for reference in _references(await api_client.get(page)):
        asset = await api_client.get(reference)
        assert asset.status_code == 200, reference
        suffix = Path(urlsplit(reference).path).suffix
        media_type = asset.headers["content-type"].split(";")[0].strip()
        assert media_type in CONTENT_TYPES[suffix], (reference, media_type)
        relative = urlsplit(reference).path.removeprefix("/schema/assets/")
        assert asset.content == (STATIC_FOLDER / relative).read_bytes()


async def test_swagger_loads_the_vendored_bundle_and_preset(
    api_client: httpx.AsyncClient,
) -> None:
    references = set(_references(await api_client.get("/schema/swagger")))
    assert {
        "/schema/assets/swagger-ui/swagger-ui-bundle.js",
        "/schema/assets/swagger-ui/swagger-ui-standalone-preset.js",
        "/schema/assets/swagger-ui/swagger-ui.css",
    } <= references
    bundle = await api_client.get("/schema/assets/swagger-ui/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content
    redoc = await api_client.get("/schema/assets/redoc/redoc.standalone.js")
    assert b"Redoc" in redoc.content


@pytest.mark.parametrize("page", ["/schema/elements", "/schema/rapidoc"])
async def test_pages_that_need_a_cdn_are_not_served(
    api_client: httpx.AsyncClient, page: str
) -> None:
    assert (await api_client.get(page)).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/schema/assets/../docs.py",
        "/schema/assets/%2e%2e/docs.py",
        "/schema/assets/swagger-ui/missing.js",
    ],
)
async def test_only_the_vendored_files_are_served(api_client: httpx.AsyncClient, path: str) -> None:
    response = await api_client.get(path)
    assert response.status_code == 404
    assert b"from __future__" not in response.content


def test_the_vendored_assets_carry_their_licenses() -> None:
    for folder in ("swagger-ui", "redoc"):
        assert (STATIC_FOLDER / folder / "LICENSE").read_text().strip()
