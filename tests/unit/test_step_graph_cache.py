"""The worker's cache of published versions' graphs is bounded, most recently used kept."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from config.settings import Settings
from server.crypto.aead import Keyring
from server.runs import step_runner, store


async def test_the_least_recently_used_graph_leaves_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[uuid.UUID] = []

    async def load_graph(_connection: Any, version_id: uuid.UUID) -> Any:
        loads.append(version_id)
        return f"graph of {version_id}"

    monkeypatch.setattr(step_runner, "GRAPH_CACHE_SIZE", 2)
    monkeypatch.setattr(store, "load_graph", load_graph)
    runner = step_runner.StepRunner(Settings(), Keyring([("k", bytes(32))]), {})
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    connection: Any = None  # never used: load_graph is replaced
    for version in (first, second, first, third, first, second):
        graph: Any = await runner._graph(connection, version)
        assert graph == f"graph of {version}"
    # `second` left when `third` came (first had been used since); then `third` left.
    assert loads == [first, second, third, second]
