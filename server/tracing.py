"""OpenTelemetry tracing: one trace per execution, from its intake to each step's outbound call.

Off by default, and then free: `ENABLED` is the one flag every traced path tests first, and
while it is False no OpenTelemetry module is imported, no span is made and no context string is
built (the `opentelemetry` packages are the optional extra `switchyard[otel]`). `start` turns
it on when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set: spans go through the
SDK's batch processor to its OTLP/HTTP protobuf exporter, which reads the standard OTEL_*
variables itself (headers, timeout, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*).
The service name defaults to `switchyard`. This module keeps its own tracer provider (never the
process-global one), so tests can `enable` an in-memory exporter and `disable` it again.

Spans: `POST /hooks/{path}` and `POST /api/v1/events` (SERVER, continuing an inbound W3C
`traceparent`; `server.api.traced_intake`), `intake <trigger key>` (the event and the
executions it starts; `server.runs.intake`), `step <key>` once per attempt
(`server.runs.step_runner`), and the `http_request` action's call (CLIENT, which sends its own
`traceparent`). The intake and the steps run in different processes at different times: each
execution stores its intake span's traceparent (`workflow_execution.traceparent`), and every
step span is that span's child.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span as Span  # re-exported for the traced modules' types
    from opentelemetry.trace import SpanKind, Tracer
    from opentelemetry.util.types import AttributeValue

    from config.settings import Settings

# The one flag: True while spans are recorded. Read it as `tracing.ENABLED` (never import the
# name: it changes when tracing starts or stops).
ENABLED: bool = False
# What a traced path enters instead of a span when tracing is off (`with ... as span`: None).
NO_SPAN: Final = contextlib.nullcontext()

TRACER_NAME: Final = "switchyard"
DEFAULT_SERVICE_NAME: Final = "switchyard"

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


class TracingUnavailableError(RuntimeError):
    """Tracing is configured but its packages are missing."""


def start(settings: Settings) -> bool:
    """Export spans by OTLP/HTTP when `settings` name an endpoint; True if this call turned
    tracing on (its caller then calls `stop` on exit, which flushes what is buffered)."""
    if ENABLED or not settings.tracing_enabled:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise TracingUnavailableError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed "
            f"({error.name}): pip install 'switchyard[otel]', or unset the variable"
        ) from None

    enable(BatchSpanProcessor(OTLPSpanExporter()))
    return True


def enable(processor: SpanProcessor) -> None:
    """Record spans into `processor` from now on (tests pass an in-memory exporter's)."""
    global ENABLED, _tracer, _provider  # the module's one switch
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer(TRACER_NAME)
    ENABLED = True


def stop() -> None:
    """Stop recording, then flush and shut the exporter down (at the end of the lifespan)."""
    global ENABLED, _tracer, _provider  # the module's one switch
    ENABLED = False
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def _the_tracer() -> Tracer:
    if _tracer is None:
        raise RuntimeError("tracing is off: test tracing.ENABLED before making a span")
    return _tracer


def _parent(carrier: Mapping[str, str]) -> Context:
    """The context a W3C `traceparent` (and `tracestate`) in `carrier` names; an empty one
    (a new trace) when it is missing or malformed."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)


def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, AttributeValue]
) -> contextlib.AbstractContextManager[Span]:
    """A SERVER span for an inbound request, continuing the sender's trace when its headers
    carry a valid `traceparent`."""
    from opentelemetry.trace import SpanKind

    return _started(name, _parent(headers), SpanKind.SERVER, attributes)


def span(
    name: str,
    attributes: Mapping[str, AttributeValue],
    *,
    traceparent: str | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """An INTERNAL span: a child of the current span, or of the span `traceparent` names
    (a step continues its execution's intake that way, in another process and later)."""
    from opentelemetry.trace import SpanKind

    context = None if traceparent is None else _parent({"traceparent": traceparent})
    return _started(name, context, SpanKind.INTERNAL, attributes)


@contextlib.contextmanager
def client_span(
    name: str, headers: dict[str, str], attributes: Mapping[str, AttributeValue]
) -> Iterator[Span]:
    """A CLIENT span for an outbound call; adds its `traceparent` to `headers` (the request's)
    so the callee continues the trace."""
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    with _started(name, None, SpanKind.CLIENT, attributes) as current:
        TraceContextTextMapPropagator().inject(headers)
        yield current


@contextlib.contextmanager
def _started(
    name: str, parent: Context | None, kind: SpanKind, attributes: Mapping[str, AttributeValue]
) -> Iterator[Span]:
    """A span made current for the block. An exception leaving the block is not recorded (its
    message could hold anything, a secret included): the span's status becomes ERROR with the
    exception's type name, unless the block set a status itself (a step's redacted error)."""
    from opentelemetry.trace import StatusCode

    with _the_tracer().start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as error:
            status = getattr(current, "status", None)  # SDK spans show theirs
            if status is None or status.status_code is StatusCode.UNSET:
                mark_failed(current, type(error).__name__)
            raise


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, to store and continue later; None when no
    span is recording."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def mark_failed(current: Span, description: str | None) -> None:
    """Set the span's status to ERROR with `description` (already redacted)."""
    from opentelemetry.trace import Status, StatusCode

    current.set_status(Status(StatusCode.ERROR, description))


def current_span() -> Span:
    """The span of the current context (a no-op span when none is recording)."""
    from opentelemetry.trace import get_current_span

    return get_current_span()
