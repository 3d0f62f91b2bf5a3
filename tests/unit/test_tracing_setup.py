"""Turning tracing on (server.tracing.start): only with an endpoint, and a clear error when the
`otel` extra is missing."""

from __future__ import annotations

import sys

import pytest

from config.settings import load_settings
from server import tracing

EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def test_without_an_endpoint_start_turns_nothing_on() -> None:
    assert tracing.start(load_settings({})) is False
    assert tracing.ENABLED is False


def test_an_endpoint_without_the_otel_extra_stops_start_up_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, EXPORTER_MODULE, None)  # as if not installed
    settings = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    with pytest.raises(tracing.TracingUnavailableError, match=r"switchyard\[otel\]"):
        tracing.start(settings)
    assert tracing.ENABLED is False


def test_an_endpoint_turns_tracing_on_until_stopped() -> None:
    settings = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert tracing.start(settings) is True
    try:
        assert tracing.ENABLED is True
        assert tracing.start(settings) is False  # already on: the first caller stops it
    finally:
        tracing.stop()
    assert tracing.ENABLED is False
