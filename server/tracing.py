"""OpenTelemetry traces: a server span per call (gRPC and REST), with child spans for the image
checks ("decode"), the wait in the batch queue ("queue") and the model call ("model").

Off by default, and then free: every helper returns a shared no-op context manager after one
``if``, and OpenTelemetry is not even imported. It turns on when the standard environment asks for
an exporter: ``OTEL_TRACES_EXPORTER=otlp`` (or ``console``), or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_SDK_DISABLED=true`` keeps it off. The OTLP exporter,
sampler (``OTEL_TRACES_SAMPLER``) and resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``)
read their own ``OTEL_*`` variables. Callers' W3C ``traceparent``/``tracestate`` (gRPC metadata or
HTTP headers) become the parents of the server spans.

A batch serves several requests, each with its own trace: every request gets its own "queue" span
(enqueue -> batch start) and "model" span (the batch's model call, with its size and duration).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

SERVICE_NAME = "imageserve"
_NOOP = contextlib.nullcontext()
#: gRPC codes that are the server's fault: their spans get an ERROR status (client errors do not).
_SERVER_FAULTS = {"INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "DATA_LOSS", "UNIMPLEMENTED"}


class _State:
    tracer: Any = None
    provider: Any = None


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTEL_* variables ask for trace export."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter and exporter != "none":
        return True
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _exporter_from(environ: Mapping[str, str]):
    kind = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r} is not supported here; use otlp or console")
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    except ImportError:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} needs opentelemetry-exporter-otlp-proto-http "
            "installed; or use grpc"
        ) from None
    return HttpExporter()


def enable(exporter, batch: bool = True) -> None:
    """Start tracing to ``exporter`` (tests pass an in-memory exporter with ``batch=False``)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # NOTE: our own provider, not the global one: the global can be set once per process, and an
    # embedding application (or a test) may have its own.
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _state.provider = provider
    _state.tracer = provider.get_tracer("imageserve")


def configure_from_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Enable tracing if the OTEL_* environment asks for it (and it is not already on)."""
    environ = os.environ if environ is None else environ
    if enabled():
        return True
    if not wanted(environ):
        return False
    enable(_exporter_from(environ))
    log.info("OpenTelemetry tracing on (exporter %s)", environ.get("OTEL_TRACES_EXPORTER", "otlp"))
    return True


def disable() -> None:
    """Flush and stop (server shutdown; tests)."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()


def server_span(name: str, carrier: Callable[[], Mapping[str, str]], attributes: Mapping[str, Any]):
    """The span of one call, child of the caller's ``traceparent`` (``carrier()`` gives the headers)."""
    if _state.tracer is None:
        return _NOOP
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    return _state.tracer.start_as_current_span(
        name,
        context=propagate.extract(carrier()),
        kind=SpanKind.SERVER,
        attributes=dict(attributes),
        record_exception=False,
        set_status_on_exception=False,
    )


def start_stream_span(name: str, carrier: Callable[[], Mapping[str, str]], attributes: Mapping[str, Any]):
    """The span of one server-streaming call, or None when off; end it with :func:`end_span`.

    NOTE: not made current: a streaming handler is an async generator whose frames may be resumed or
    closed from another context, where detaching a current span would fail.
    """
    if _state.tracer is None:
        return None
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    return _state.tracer.start_span(
        name, context=propagate.extract(carrier()), kind=SpanKind.SERVER, attributes=dict(attributes)
    )


def end_span(span, code: str, request_id: str | None = None) -> None:
    """Record the outcome on a span from :func:`start_stream_span` and end it (no-op for None)."""
    if span is None:
        return
    set_outcome(span, code, request_id=request_id)
    span.end()


def set_outcome(span, code: str, http_status: int | None = None, request_id: str | None = None) -> None:
    """The call's status code on its span; server faults mark the span as an error."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("imageserve.status", code)
    if request_id is not None:
        span.set_attribute("imageserve.request_id", request_id)
    if http_status is not None:
        span.set_attribute("http.response.status_code", http_status)
    if code in _SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, code))


def span(name: str, attributes: Mapping[str, Any] | None = None):
    """A child span of the current one (no-op when off)."""
    if _state.tracer is None:
        return _NOOP
    return _state.tracer.start_as_current_span(name, attributes=dict(attributes or {}))


def current_context() -> Any:
    """The current trace context, to parent spans recorded later (None when off)."""
    if _state.tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None when off or outside a span."""
    if _state.tracer is None:
        return None
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def record_batch(
    name: str,
    parents: Iterable[Any],
    enqueued_at: Sequence[float],
    started: float,
    finished: float,
    size: int,
) -> None:
    """After a batch: a "queue" and a "model" span for each request in it (times are ``time.monotonic()``)."""
    if _state.tracer is None:
        return
    to_epoch_ns = time.time_ns() - time.monotonic_ns()
    start_ns, end_ns = int(started * 1e9) + to_epoch_ns, int(finished * 1e9) + to_epoch_ns
    attributes = {
        "imageserve.batcher": name,
        "imageserve.batch.size": size,
        "imageserve.model.runtime_ms": (finished - started) * 1000,
    }
    for parent, queued in zip(parents, enqueued_at):
        if parent is None:
            continue
        queue = _state.tracer.start_span("queue", context=parent, start_time=int(queued * 1e9) + to_epoch_ns)
        queue.set_attribute("imageserve.queue.wait_ms", (started - queued) * 1000)
        queue.end(end_time=start_ns)
        model = _state.tracer.start_span("model", context=parent, start_time=start_ns, attributes=attributes)
        model.end(end_time=end_ns)
