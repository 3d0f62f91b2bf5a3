"""The OpenAPI pages (`/schema`, `/schema/swagger`, `/schema/redoc`) with no third-party host.

Litestar's render plugins load Swagger UI, ReDoc, their fonts and a favicon from public CDNs by
default, so the pages are blank wherever the browser cannot reach them (offline, air-gapped or
locked-down networks, strict CSPs). The assets are vendored instead, unmodified, in
`server/api/static/` (swagger-ui-dist 5.36.0 and redoc 2.5.4 from the npm registry, with their
LICENSE files), shipped in the wheel, and served from `ASSETS_PATH` on the same origin. The
other UIs Litestar offers (Stoplight Elements, RapiDoc, Scalar) would need a CDN too and are not
served. The JSON and YAML documents are unaffected. One request may still leave: ReDoc's bundle
shows Redocly's small logo from its CDN, and drops the image when that fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

from server.access import PUBLIC

SCHEMA_PATH: Final = "/schema"
ASSETS_PATH: Final = f"{SCHEMA_PATH}/assets"
STATIC_FOLDER: Final = Path(__file__).parent / "static"
ASSET_MAX_AGE_SECONDS: Final = 3600

SWAGGER_UI: Final = f"{ASSETS_PATH}/swagger-ui"
REDOC: Final = f"{ASSETS_PATH}/redoc"
FAVICON: Final = f"<link rel='icon' type='image/png' href='{SWAGGER_UI}/favicon-32x32.png'>"


def openapi_config() -> OpenAPIConfig:
    """The OpenAPI document and its pages: ReDoc at `/schema` and `/schema/redoc`, Swagger UI
    at `/schema/swagger`, the document at `/schema/openapi.json` and `.yaml`."""
    return OpenAPIConfig(
        title="Switchyard",
        version="1",
        openapi_router=Router(
            SCHEMA_PATH,
            route_handlers=[],
            include_in_schema=False,
            dto=None,
            return_dto=None,
            opt={"role": PUBLIC},  # the document and its pages are open (server.access)
        ),
        components=Components(
            security_schemes={"BearerToken": SecurityScheme(type="http", scheme="bearer")}
        ),
        render_plugins=[
            RedocRenderPlugin(
                path=["/", "/redoc"],
                js_url=f"{REDOC}/redoc.standalone.js",
                google_fonts=False,  # the page falls back to the browser's fonts
                favicon=FAVICON,
            ),
            SwaggerRenderPlugin(
                path="/swagger",
                js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
                css_url=f"{SWAGGER_UI}/swagger-ui.css",
                standalone_preset_js_url=f"{SWAGGER_UI}/swagger-ui-standalone-preset.js",
                favicon=FAVICON,
            ),
            YamlRenderPlugin(),
        ],
    )


def assets_router() -> Router:
    """Serves the vendored files under `ASSETS_PATH`, outside API auth and the schema."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[STATIC_FOLDER],
        name="openapi_assets",
        cache_control=CacheControlHeader(public=True, max_age=ASSET_MAX_AGE_SECONDS),
        include_in_schema=False,
        opt={"role": PUBLIC},
    )
