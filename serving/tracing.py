"""Tracing with OpenTelemetry: W3C Trace Context (``traceparent``, ``tracestate``) taken from
each request and passed on to whatever it calls, and spans for the request path's stages,
exported over OTLP/HTTP (``--otlp-endpoint``, or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``).

Off by default, and then nothing is traced and nothing is passed on by ``cutover serve`` (the
gateway still passes the client's ``traceparent`` on as it came). Off costs nothing measurable:
:meth:`Tracing.span` is a shared ``nullcontext`` then, not a call into OpenTelemetry's API (its
no-op tracer costs a few microseconds a span, and a request has up to eight; benchmarks/README.md
has the figures off, on and sampled).

On, each traced process has its own ``TracerProvider`` (``service.name`` ``cutover-serve`` or
``cutover-gateway``), passed in rather than set globally, so tests run a gateway and a revision in
one process with an in-memory exporter each. The spans:

- SERVER ``POST /v2/models/{name}/infer``, ``POST /v1/chat/completions`` (by route): a request,
  a child of the caller's span;
- SERVER ``inference.GRPCInferenceService/<Method>``: a gRPC call, its context from the metadata
  (its own ``traceparent`` goes back in the initial metadata);
- ``decode``, ``validate``, ``safety`` (with a SafetyPolicy; ``direction`` input or output),
  ``queue`` (batching), ``model``, ``fallback``, ``encode``: the pipeline's stages (``pipeline.py``);
- CLIENT ``POST`` (gateway): one attempt at a revision, whose context goes on as ``traceparent``;
- CLIENT ``mirror`` (gateway): a mirrored copy, a child of the live request's span.

Calls to an upstream (the LLM's and Triton's adapters, a fallback revision) carry the
``traceparent`` of the span they are made in (``model`` or ``fallback``). The audit record of a
traced request carries its ``trace_id`` and ``span_id`` (:meth:`Tracing.ids`), so an answer in
the audit log is found in the trace store and back.

Batched requests wait in the batcher's queue and run in a batch started by another task: their
``queue`` and ``model`` spans are written afterwards from the times the batcher measured
(:meth:`Tracing.record`). A streamed chat answer's ``model`` span ends with the first chunk from
the upstream (time to first token); the stream's own screening is not a span.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["TRACE_HEADERS", "W3C", "SpanKind", "Tracing", "answered", "middleware", "propagated"]
W3C = TraceContextTextMapPropagator()
"""W3C Trace Context (https://www.w3.org/TR/trace-context/), the only propagation format read or written."""
TRACE_HEADERS = tuple(sorted(W3C.fields))
"""``traceparent`` and ``tracestate``: what a gateway passes on as the client sent it."""
OTLP_TRACES_PATH = "/v1/traces"
_OFF: AbstractContextManager[None] = nullcontext()


class Tracing:
    """One process's tracing: ``provider`` is None when it is off (``Tracing()``)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("cutover") if provider is not None else None

    @classmethod
    def exporting(cls, service: str, endpoint: str | None) -> Tracing:
        """Tracing exported over OTLP/HTTP (protobuf) to ``endpoint``, a collector's base URL as
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` gives it (``http://collector:4318``; spans go to its
        ``/v1/traces``), in batches off the request path; off when ``endpoint`` is None or
        empty. Raises ``RuntimeError`` when the exporter is not installed (the ``otlp`` extra)."""
        if not endpoint:
            return cls()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise RuntimeError("--otlp-endpoint needs the OTLP exporter: pip install 'cutover[otlp]'") from None
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + OTLP_TRACES_PATH)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def span(
        self, name: str, attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL
    ) -> AbstractContextManager[Span | None]:
        """A span made current for the block, a child of the current one; nothing when off or
        when the current span is not recorded (a request its sampler left out: its stages would
        not be either, and skipping them saves about 8 us each)."""
        if self.tracer is None or not trace.get_current_span().is_recording():
            return _OFF
        return self.tracer.start_as_current_span(name, kind=kind, attributes=attributes)

    def serving(
        self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[Span | None]:
        """The SERVER span of a request, a child of the context in ``carrier`` (its headers or
        gRPC metadata; a case-insensitive mapping, or one with lower-case keys) when it has a
        valid ``traceparent``, else the root of a new trace; nothing when off."""
        if self.tracer is None:
            return _OFF
        return self.tracer.start_as_current_span(
            name,
            context=W3C.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,  # a gRPC call's refusal ends it with an exception; not a failure
            set_status_on_exception=False,
        )

    def record(self, name: str, started: int, duration: int, attributes: Mapping[str, Any] | None = None) -> None:
        """A span, a child of the current one, for what took ``duration`` ns from ``started``
        (``time.perf_counter_ns()``), measured elsewhere (the batcher's queue and run); nothing
        when the current span is not recorded, as for :meth:`span`."""
        if self.tracer is None or not trace.get_current_span().is_recording():
            return
        start = time.time_ns() - (time.perf_counter_ns() - started)
        self.tracer.start_span(name, attributes=attributes, start_time=start).end(start + duration)

    def ids(self) -> dict[str, str]:
        """``{"trace_id": 32 hex digits, "span_id": 16}`` of the current span, for the audit
        record; empty when off or no span is current."""
        if self.tracer is None:
            return {}
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return {}
        return {"trace_id": trace.format_trace_id(context.trace_id), "span_id": trace.format_span_id(context.span_id)}

    def close(self) -> None:
        """Export the spans still held, then stop."""
        if self.provider is not None:
            self.provider.shutdown()


def propagated(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus the ``traceparent`` (and ``tracestate``) of the current span, for a
    call to an upstream; as they were when no span is current (tracing off)."""
    carried = dict(headers or {})
    W3C.inject(carried)
    return carried


def answered(span: Span, status: int) -> None:
    """Note on ``span`` the HTTP ``status`` its request ended with: an error for a 5xx, the
    server's failure (a 4xx is the client's, per OpenTelemetry's HTTP conventions)."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def middleware(tracing: Tracing, traced: Callable[[web.Request], bool]) -> Middleware:
    """aiohttp middleware giving each request that ``traced`` picks a SERVER span (none when
    tracing is off), named by its method and route (``POST /v2/models/{name}/infer``), with the
    status it ended with (:func:`answered`); the answer carries the span's ``traceparent``. Put it
    outside the middleware that turns errors into answers, so that it sees their status."""

    @web.middleware
    async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not tracing.enabled or not traced(request):
            return await handler(request)
        route = request.match_info.route.resource
        name = f"{request.method} {route.canonical if route is not None else request.path}"
        attributes = {"http.request.method": request.method, "url.path": request.path}
        with tracing.serving(name, request.headers, attributes) as span:
            response = await handler(request)
            assert span is not None
            answered(span, response.status)
            if not response.prepared:  # a stream's headers went out with its first chunk
                W3C.inject(response.headers)
        return response

    return tracing_middleware
