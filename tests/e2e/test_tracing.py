"""Tracing (server.tracing) in one process, into the SDK's in-memory exporter: one trace per
execution, from the webhook or event intake through each step attempt to the `http_request`
call and the `traceparent` it sent; an inbound traceparent continued, a malformed one ignored.
The real processes and the OTLP receiver: test_tracing_processes.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from config.settings import Role, Settings
from server import tracing
from server.app import create_app
from tests.e2e.test_hooks_auth import BODY, WHSEC
from tests.support.apps import serving
from tests.support.credentials import API_TOKEN
from tests.support.hook_senders import create_webhook, standard_headers
from tests.support.peers import HttpPeer
from tests.support.traced_runs import (
    CALLER_SPAN_ID,
    CALLER_TRACE_ID,
    CALLER_TRACEPARENT,
    fail_once,
    sent_traceparents,
    traced_workflow,
)
from tests.support.waiting import eventually
from tests.support.workflows import import_published, wait_for

STEP_SPANS: Final = ("step shape", "step call", "step call", "step done")  # call: 2 attempts


@pytest.fixture
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory (before the app is made: its middleware)."""
    exporter = InMemorySpanExporter()
    tracing.enable(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.stop()


@pytest.fixture
def traced_settings(settings_for: Callable[..., Settings]) -> Settings:
    return settings_for(
        roles=frozenset({Role.API, Role.WORKER}),
        job_poll_interval_seconds=0.2,
        http_allowed_hosts=("127.0.0.1",),
    )


def _hex(number: int, digits: int) -> str:
    return f"{number:0{digits}x}"


def _named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def _finished_spans(exporter: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    """Every span, once the last step's has ended (it ends just after its step committed)."""
    return await eventually(
        exporter.get_finished_spans,
        until=lambda spans: len(_named(spans, "step done")) == 1,
        what="the span of the last step",
    )


async def test_a_signed_webhook_is_one_trace_through_each_step_and_the_outbound_call(
    recorded_spans: InMemorySpanExporter, traced_settings: Settings, http_peer: HttpPeer
) -> None:
    fail_once(http_peer)
    async with serving(create_app(traced_settings), token=API_TOKEN) as client:
        await create_webhook(client, auth={"type": "hmac_sha256", "secret": WHSEC})
        await import_published(client, traced_workflow(http_peer.base_url))
        answer = await client.post(
            "/hooks/orders", content=BODY, headers=standard_headers(WHSEC, BODY)
        )
        assert answer.status_code == 202, answer.text
        [execution_id] = answer.json()["execution_ids"]
        assert (await wait_for(client, execution_id))["status"] == "SUCCESS"
        spans = await _finished_spans(recorded_spans)

    assert len({span.context.trace_id for span in spans}) == 1
    trace_id = spans[0].context.trace_id
    [server] = _named(spans, "POST /hooks/{path}")
    assert server.kind is SpanKind.SERVER
    assert server.parent is None  # no traceparent came in: the trace starts here
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 202
    [intake] = _named(spans, "intake orders")
    assert _parent_id(intake) == server.context.span_id
    assert intake.attributes is not None
    assert intake.attributes["switchyard.execution.ids"] == (execution_id,)

    steps = sorted((span for span in spans if span.name.startswith("step ")), key=_started)
    assert [span.name for span in steps] == list(STEP_SPANS)
    assert {_parent_id(span) for span in steps} == {intake.context.span_id}
    first_call, second_call = _named(steps, "step call")
    assert [_attribute(span, "switchyard.step.attempt") for span in steps] == [1, 1, 2, 1]
    assert first_call.status.status_code is StatusCode.ERROR
    assert "503" in (first_call.status.description or "")
    assert _attribute(second_call, "switchyard.step.status") == "SUCCESS"
    for span in steps:
        assert _attribute(span, "switchyard.execution.id") == execution_id
    first = steps[0]  # claimed from the queue: its wait is known
    assert _attribute(first, "switchyard.queue.wait_ms") >= 0
    assert _attribute(first, "switchyard.job.handed_on") is False

    outbound = sorted(_named(spans, "POST"), key=_started)
    assert [span.kind for span in outbound] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert [_parent_id(span) for span in outbound] == [
        first_call.context.span_id,
        second_call.context.span_id,
    ]
    assert sent_traceparents(http_peer) == [
        (_hex(trace_id, 32), _hex(span.context.span_id, 16)) for span in outbound
    ]


async def test_an_event_with_a_traceparent_continues_the_callers_trace(
    recorded_spans: InMemorySpanExporter, traced_settings: Settings, http_peer: HttpPeer
) -> None:
    http_peer.reply("/orders", 200)
    async with serving(create_app(traced_settings), token=API_TOKEN) as client:
        registered = await client.post(
            "/api/v1/registry/triggers", json={"trigger_key": "checkout", "type": "event"}
        )
        assert registered.status_code == 201, registered.text
        await import_published(client, traced_workflow(http_peer.base_url, "checkout"))
        answer = await client.post(
            "/api/v1/events",
            json={"trigger_key": "checkout", "payload": {"total": 7}},
            headers={"traceparent": CALLER_TRACEPARENT, "tracestate": "vendor=1"},
        )
        assert answer.status_code == 202, answer.text
        [execution_id] = answer.json()["execution_ids"]
        assert (await wait_for(client, execution_id))["status"] == "SUCCESS"
        spans = await _finished_spans(recorded_spans)

    assert {_hex(span.context.trace_id, 32) for span in spans} == {CALLER_TRACE_ID}
    [server] = _named(spans, "POST /api/v1/events")
    assert server.parent is not None
    assert server.parent.is_remote
    assert _hex(server.parent.span_id, 16) == CALLER_SPAN_ID
    [outbound] = _named(spans, "POST")
    assert sent_traceparents(http_peer) == [(CALLER_TRACE_ID, _hex(outbound.context.span_id, 16))]


async def test_a_malformed_traceparent_starts_a_new_trace(
    recorded_spans: InMemorySpanExporter, traced_settings: Settings
) -> None:
    async with serving(create_app(traced_settings), token=API_TOKEN) as client:
        await create_webhook(client)
        answer = await client.post(
            "/hooks/orders", content=BODY, headers={"traceparent": "00-not-a-trace-01"}
        )
        assert answer.status_code == 202, answer.text
    [server] = _named(recorded_spans.get_finished_spans(), "POST /hooks/{path}")
    assert server.parent is None
    [intake] = _named(recorded_spans.get_finished_spans(), "intake orders")
    assert _parent_id(intake) == server.context.span_id


def _started(span: ReadableSpan) -> int:
    return span.start_time or 0


def _attribute(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(name)
