"""What the wheel (and so the Docker image, which pip-installs it) ships besides Python code."""

from __future__ import annotations

from pathlib import Path

from hatchling.builders.wheel import WheelBuilder

from server.api.docs import STATIC_FOLDER

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_the_vendored_openapi_assets() -> None:
    shipped = {
        included.distribution_path for included in WheelBuilder(str(ROOT)).recurse_included_files()
    }
    vendored = {
        path.relative_to(ROOT).as_posix() for path in STATIC_FOLDER.rglob("*") if path.is_file()
    }
    assert "server/api/static/swagger-ui/swagger-ui-bundle.js" in vendored
    assert "server/api/static/redoc/redoc.standalone.js" in vendored
    assert vendored <= shipped, sorted(vendored - shipped)


def test_the_wheel_ships_the_console_templates_and_assets() -> None:
    shipped = {
        included.distribution_path for included in WheelBuilder(str(ROOT)).recurse_included_files()
    }
    console = ROOT / "server" / "console"
    needed = {
        path.relative_to(ROOT).as_posix()
        for folder in ("templates", "static")
        for path in (console / folder).rglob("*")
        if path.is_file()
    }
    assert "server/console/templates/execution.html" in needed
    assert "server/console/static/console.js" in needed
    assert needed <= shipped, sorted(needed - shipped)
