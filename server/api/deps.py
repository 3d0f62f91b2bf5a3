"""Dependencies handed to controllers, read from `app.state` (set by the lifespan)."""

from __future__ import annotations

from litestar.datastructures import State
from piccolo.engine.postgres import PostgresEngine

from config.settings import Settings


def provide_engine(state: State) -> PostgresEngine:
    engine: PostgresEngine = state.engine
    return engine


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings
