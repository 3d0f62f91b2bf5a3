"""What controllers receive, read from `app.state` (set by the lifespan): the one way the API
reaches the database and the process's resources. Every dependency is declared once here and
provided by name (`DEPENDENCIES`) to the API router and the webhook controller; the token guard,
which Litestar gives no dependencies, reads the pool through `pool_of`.

- `pool`: the process's asyncpg pool (Piccolo's, fair: `server.db.fair_pool`), for the raw
  statements of the runtime, the queue and the read models. The design-time repositories
  (`server.db.*` on Piccolo's tables) use the same pool through Piccolo.
- `settings`, `keyring`.
- `resources`: all of the above and `recorder` (trigger health), `object_store` (published
  documents), `endpoint_cache` (webhook endpoints and their routes), for a handler that needs
  more than one (see `Resources`).
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
from server.crypto.aead import Keyring
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


class Resources:
    """Every resource at once, as one dependency: a handler that needs several takes this.
    Litestar resolves several dependencies of one handler concurrently in a task group per
    request, which cost the webhook path about 6% of the server's CPU; one costs a call."""

    __slots__ = ("_state",)

    def __init__(self, state: State) -> None:
        self._state = state

    @property
    def pool(self) -> asyncpg.Pool:
        return pool_of(self._state)

    @property
    def settings(self) -> Settings:
        return provide_settings(self._state)

    @property
    def keyring(self) -> Keyring:
        return provide_keyring(self._state)

    @property
    def recorder(self) -> IntakeRecorder:
        recorder: IntakeRecorder = self._state.intake_recorder
        return recorder

    @property
    def object_store(self) -> ObjectStore:
        store: ObjectStore = self._state.object_store
        return store

    @property
    def endpoint_cache(self) -> EndpointCache:
        cache: EndpointCache = self._state.endpoint_cache
        return cache


DEPENDENCIES: dict[str, Any] = {
    "pool": Provide(pool_of, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "keyring": Provide(provide_keyring, sync_to_thread=False),
    "resources": Provide(Resources, sync_to_thread=False),
}
