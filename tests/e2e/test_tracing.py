"""Tracing (server.tracing): one trace per execution, from the webhook or event intake through
each step attempt to the `http_request` call and its `traceparent`; an inbound traceparent
continued; spans exported to a real OTLP/HTTP receiver by `switchyard run` processes (the api
and the worker apart, so the context crosses processes only through the database); and with
tracing off, no OpenTelemetry module imported at all."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import httpx
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
from tests.support.credentials import API_TOKEN, ENCRYPTION_KEY
from tests.support.hook_senders import create_webhook, standard_headers
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.peers import HttpPeer, RecordedRequest, Reply
from tests.support.processes import SWITCHYARD, ServerProcess, environment, free_port
from tests.support.waiting import eventually, eventually_sync
from tests.support.workflows import import_published, wait_for

# A caller's span: its trace goes on through Switchyard.
CALLER_TRACE_ID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID: Final = "00f067aa0ba902b7"
CALLER_TRACEPARENT: Final = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
STEP_SPANS: Final = ("step shape", "step call", "step call", "step done")  # call: 2 attempts


def traced_workflow(peer_url: str, trigger_key: str = "orders") -> dict[str, Any]:
    """Three steps; the middle one calls the peer (which fails the first attempt)."""
    return {
        "name": f"Traced {trigger_key}",
        "steps": [
            {
                "key": "shape",
                "kind": "action",
                "action_key": "transform",
                "cfg": {"output": {"total": "{{ trigger.total }}"}},
            },
            {
                "key": "call",
                "kind": "action",
                "action_key": "http_request",
                "cfg": {
                    "method": "POST",
                    "url": f"{peer_url}/orders",
                    "json": {"total": "{{ steps.shape.output.total }}"},
                    "retry": {"max_attempts": 3, "backoff_seconds": 0.05},
                },
            },
            {
                "key": "done",
                "kind": "action",
                "action_key": "transform",
                "cfg": {"output": {"answered": "{{ steps.call.output.status }}"}},
            },
        ],
        "edges": [{"from": "shape", "to": "call"}, {"from": "call", "to": "done"}],
        "subscriptions": [{"trigger_key": trigger_key}],
    }


def fail_once(peer: HttpPeer) -> None:
    answers = iter([Reply(status=503)])
    peer.respond("/orders", lambda _: next(answers, Reply(status=200, body=b"ok")))


def sent_traceparents(peer: HttpPeer) -> list[tuple[str, str]]:
    """(trace id, parent span id) of each call the peer received."""
    found = [TRACEPARENT.fullmatch(r.headers.get("traceparent", "")) for r in _calls(peer)]
    return [(match[1], match[2]) if match else ("", "") for match in found]


def _calls(peer: HttpPeer) -> list[RecordedRequest]:
    return peer.requests_to("/orders")


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


# -- Real processes ------------------------------------------------------------------------------


@contextmanager
def _traced_process(
    roles: str, env: dict[str, str], data_dir: Path, log: Path
) -> Iterator[ServerProcess]:
    """`switchyard run --roles <roles>`; its output goes to `log` (a pipe could fill up)."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                *SWITCHYARD,
                "run",
                "--roles",
                roles,
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = ServerProcess(process, port)
    try:
        server.wait_ready()
        yield server
    finally:
        if process.poll() is None:
            server.stop()


def _process_env(database_dsn: str, **values: str) -> dict[str, str]:
    return environment(
        DATABASE_URL=database_dsn,
        API_TOKENS=API_TOKEN,
        ENCRYPTION_KEYS=ENCRYPTION_KEY,
        HTTP_ALLOWED_HOSTS="127.0.0.1",
        JOB_POLL_INTERVAL_SECONDS="0.2",
        **values,
    )


def _run_webhook_through(server: ServerProcess, peer: HttpPeer, headers: dict[str, str]) -> str:
    """Set up the traced workflow and its signed webhook on `server`, deliver one event, and
    return the execution id once it succeeded."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10
    ) as client:
        webhook = {
            "trigger_key": "orders",
            "path": "orders",
            "auth": {"type": "hmac_sha256", "secret": WHSEC},
        }
        assert client.post("/api/v1/webhooks", json=webhook).status_code == 201
        imported = client.post(
            "/api/v1/workflows/import",
            params={"publish": "true"},
            json=traced_workflow(peer.base_url),
        )
        assert imported.status_code == 201, imported.text
        answer = client.post(
            "/hooks/orders", content=BODY, headers={**standard_headers(WHSEC, BODY), **headers}
        )
        assert answer.status_code == 202, answer.text
        [execution_id] = answer.json()["execution_ids"]
        execution = eventually_sync(
            lambda: client.get(f"/api/v1/executions/{execution_id}").json(),
            until=lambda body: body["status"] in {"SUCCESS", "FAILED", "CANCELLED"},
            what=f"execution {execution_id} finished",
            within=30,
            every=0.1,
        )
        assert execution["status"] == "SUCCESS", execution
        return str(execution_id)


def test_switchyard_run_exports_the_trace_to_an_otlp_receiver_across_api_and_worker(
    database_dsn: str, tmp_path: Path, http_peer: HttpPeer
) -> None:
    fail_once(http_peer)
    with otlp_receiver() as receiver:

        def env(instance: str) -> dict[str, str]:
            return _process_env(
                database_dsn,
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                OTEL_BSP_SCHEDULE_DELAY="50",
                OTEL_RESOURCE_ATTRIBUTES=f"service.instance.id={instance}",
            )

        data = tmp_path / "data"
        with (
            _traced_process("api", env("api"), data, tmp_path / "api.log") as api,
            _traced_process("worker", env("worker"), data, tmp_path / "worker.log"),
        ):
            execution_id = _run_webhook_through(api, http_peer, {"traceparent": CALLER_TRACEPARENT})
            spans = eventually_sync(
                lambda: receiver.trace(CALLER_TRACE_ID),
                until=lambda found: sum(span.name.startswith("step ") for span in found) == 4,
                what="every step attempt's span at the receiver",
                within=20,
                every=0.1,
            )
        _assert_exported(receiver, spans, execution_id, http_peer)


def _assert_exported(
    receiver: OtlpReceiver, spans: list[ReceivedSpan], execution_id: str, peer: HttpPeer
) -> None:
    assert set(receiver.content_types) == {"application/x-protobuf"}
    by_name: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [server] = by_name["POST /hooks/{path}"]
    assert server.parent_span_id == CALLER_SPAN_ID
    assert server.service["service.name"] == "switchyard"
    assert server.service["service.instance.id"] == "api"
    [intake] = by_name["intake orders"]
    assert intake.parent_span_id == server.span_id
    assert intake.attributes["switchyard.execution.ids"] == [execution_id]
    steps = by_name["step shape"] + by_name["step call"] + by_name["step done"]
    assert {span.service["service.instance.id"] for span in steps} == {"worker"}
    assert {span.parent_span_id for span in steps} == {intake.span_id}
    assert sorted(span.attributes["switchyard.step.attempt"] for span in by_name["step call"]) == [
        1,
        2,
    ]
    assert "switchyard.queue.wait_ms" in by_name["step shape"][0].attributes
    outbound = by_name["POST"]
    assert len(outbound) == 2
    assert {span.parent_span_id for span in outbound} == {s.span_id for s in by_name["step call"]}
    assert sorted(sent_traceparents(peer)) == sorted(
        (CALLER_TRACE_ID, span.span_id) for span in outbound
    )


# What tracing would import: the SDK, the API's spans and context, the exporter and its protobuf
# messages. (Litestar probes `opentelemetry.semconv` for its own optional plugin at import time
# when the package is installed; that holds no tracer and costs nothing per request.)
TRACING_MODULES: Final = (
    "opentelemetry.sdk",
    "opentelemetry.trace",
    "opentelemetry.context",
    "opentelemetry.propagate",
    "opentelemetry.exporter",
    "opentelemetry.proto",
    "google.protobuf",
)


def _imported_modules(import_log: str) -> set[str]:
    """Module names from `python -X importtime` lines (`import time: self | total | name`)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in import_log.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_with_tracing_off_switchyard_run_never_imports_the_opentelemetry_sdk(
    database_dsn: str, tmp_path: Path, http_peer: HttpPeer
) -> None:
    """A whole run (every role, a webhook through the http_request workflow) with no OTLP
    endpoint: the import log (`python -X importtime`) names none of tracing's modules, and
    the outbound call carries no traceparent (not even the sender's)."""
    fail_once(http_peer)
    log = tmp_path / "switchyard.log"
    env = _process_env(database_dsn, PYTHONPROFILEIMPORTTIME="1")
    with _traced_process("api,worker,scheduler", env, tmp_path / "data", log) as server:
        _run_webhook_through(server, http_peer, {"traceparent": CALLER_TRACEPARENT})
        assert server.stop() == 0
    imported = _imported_modules(log.read_text())
    assert "server.app" in imported  # the import log is there
    assert not {name for name in imported if name.startswith(TRACING_MODULES)}
    assert all("traceparent" not in r.headers for r in _calls(http_peer))
