"""What controllers receive, read from `app.state` (set by the lifespan): the one way the API
reaches the database and the process's resources. Every dependency is declared once here and
provided by name (`DEPENDENCIES`) to the API router and the webhook controller; the token guard,
which Litestar gives no dependencies, reads the pool through `pool_of`.

- `pool`: the process's asyncpg pool (Piccolo's, fair: `server.db.fair_pool`), for the raw
  statements of the runtime, the queue and the read models. The design-time repositories
  (`server.db.*` on Piccolo's tables) use the same pool through Piccolo.
- `settings`, `keyring`, `recorder` (trigger health), `object_store` (published documents),
  `endpoint_cache` (webhook endpoints and their routes).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias, TypeVar

import asyncpg
from litestar.datastructures import State
from litestar.di import Dependency, Provide
from litestar.params import SkipValidationMarker

from config.settings import Settings
from server.api.deps_secrets import provide_keyring
from server.api.hook_cache import EndpointCache
from server.db.pool import asyncpg_pool
from server.db.trigger_health import IntakeRecorder
from server.storage.object_store import ObjectStore

T = TypeVar("T")

Injected: TypeAlias = Annotated[T, Dependency(kind="named"), SkipValidationMarker()]
"""A handler parameter provided by name from `DEPENDENCIES`: our own objects, not client input,
so they are not validated (a Protocol such as `ObjectStore` cannot be)."""


def pool_of(state: State) -> asyncpg.Pool:
    return asyncpg_pool(state.database)


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_recorder(state: State) -> IntakeRecorder:
    recorder: IntakeRecorder = state.intake_recorder
    return recorder


def provide_object_store(state: State) -> ObjectStore:
    store: ObjectStore = state.object_store
    return store


def provide_endpoint_cache(state: State) -> EndpointCache:
    cache: EndpointCache = state.endpoint_cache
    return cache


DEPENDENCIES: dict[str, Any] = {
    "pool": Provide(pool_of, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "keyring": Provide(provide_keyring, sync_to_thread=False),
    "recorder": Provide(provide_recorder, sync_to_thread=False),
    "object_store": Provide(provide_object_store, sync_to_thread=False),
    "endpoint_cache": Provide(provide_endpoint_cache, sync_to_thread=False),
}
