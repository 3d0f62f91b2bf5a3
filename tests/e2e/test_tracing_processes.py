"""Tracing across real processes: `switchyard run --roles api` and `--roles worker` export to a
real OTLP/HTTP receiver on loopback (the context crosses processes only through the database);
and with tracing off, a whole run imports none of tracing's modules."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import httpx

from tests.e2e.test_hooks_auth import BODY, WHSEC
from tests.support.credentials import API_TOKEN, ENCRYPTION_KEY
from tests.support.hook_senders import standard_headers
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.peers import HttpPeer
from tests.support.processes import SWITCHYARD, ServerProcess, environment, free_port
from tests.support.traced_runs import (
    CALLER_SPAN_ID,
    CALLER_TRACE_ID,
    CALLER_TRACEPARENT,
    calls_to_peer,
    fail_once,
    sent_traceparents,
    traced_workflow,
)
from tests.support.waiting import eventually_sync


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
    assert all("traceparent" not in r.headers for r in calls_to_peer(http_peer))
