"""The Piccolo app that owns Switchyard's tables and their migration history."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from server.db.tables import TABLES

APP_NAME = "switchyard"
MIGRATIONS_FOLDER = Path(__file__).resolve().parents[2] / "piccolo_migrations" / APP_NAME

APP_CONFIG = AppConfig(
    app_name=APP_NAME,
    migrations_folder_path=str(MIGRATIONS_FOLDER),
    table_classes=TABLES,
    migration_dependencies=[],
    commands=[],
)
