"""Tracing with OpenTelemetry through the real gateway and a real `cutover serve`, in one process,
each with its own TracerProvider and in-memory exporter: the ``traceparent`` a client sends is
the parent of the gateway's span, the gateway's attempt the parent of the revision's, the
pipeline's stages are the revision's children, the upstream is called with the span it was
called in, and the audit record carries the trace id; over gRPC the same from metadata;
mirrored copies are children of the live request; with a SafetyPolicy its screening is a span.
Off, nothing is traced, and the gateway still passes the client's ``traceparent`` on. A `cutover
serve` process exports over OTLP/HTTP to a receiver here that decodes with opentelemetry-proto."""

from __future__ import annotations

import http.server
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from tritonclient.grpc.service_pb2 import ServerLiveRequest
from tritonclient.grpc.service_pb2_grpc import GRPCInferenceServiceStub

from cutover.api.v1alpha1.modeldeployment import Batching
from cutover.serving import sample_models
from cutover.serving.gateway.app import Gateway, GatewayConfig
from cutover.serving.gateway.grpc_proxy import GatewayInferenceService
from cutover.serving.grpc_server import InferenceService, listening
from cutover.serving.server import ModelServer, ServeConfig
from cutover.serving.tracing import Tracing
from tests.support.waiting import wait_until

from .support import Serving, threaded_http_server
from .test_adapters import ChatUpstream, chat_upstream
from .test_gateway_requests import MODEL, deployment, settled, shadowing
from .test_safety_pipeline import Setup, Upstream
from .test_server import models

__all__ = ["chat_upstream", "models"]  # the fixtures, used by name

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CALLER}-01"
"""The client's span context (the W3C specification's example)."""
STABLE = [{"revision": "aaa", "role": "stable", "weight": 100}]


def traced(service: str) -> tuple[Tracing, InMemorySpanExporter]:
    """Tracing on, into an in-memory exporter, as ``service``."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def only(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def parent(span: ReadableSpan) -> str | None:
    return format_span_id(span.parent.span_id) if span.parent is not None else None


def own(span: ReadableSpan) -> str:
    assert span.context is not None
    return format_span_id(span.context.span_id)


def trace_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return format_trace_id(span.context.trace_id)


def children(spans: Sequence[ReadableSpan], of: ReadableSpan) -> list[str]:
    return sorted(span.name for span in spans if parent(span) == own(of))


@dataclass
class Stack:
    client: TestClient[Any, Any]
    gateway: Gateway
    server: ModelServer


Start = Callable[[ServeConfig, dict[str, Any], Tracing, Tracing], Awaitable[Stack]]


@pytest.fixture
async def stack() -> AsyncIterator[Start]:
    """A real `cutover serve` (its ModelServer) and the gateway routing every service of the
    ModelDeployment to it, each with the tracing given."""
    started: list[tuple[Stack, TestServer]] = []

    async def start(config: ServeConfig, md: dict[str, Any], serving: Tracing, gateway_tracing: Tracing) -> Stack:
        server = ModelServer(config, tracing=serving)
        await server.load()
        revision = TestServer(server.app())
        await revision.start_server()
        url = str(revision.make_url("")).rstrip("/")
        gateway = Gateway(GatewayConfig(auth=False), gateway_tracing)
        gateway.unlisted = set()
        gateway.set_resolver(lambda namespace, service: url)
        gateway.replace_deployments([md])
        client = TestClient(TestServer(gateway.app()))
        await client.start_server()
        started.append((Stack(client, gateway, server), revision))
        return started[-1][0]

    yield start
    for each, revision in started:
        await each.client.close()
        await each.gateway.close()
        await revision.close()
        await each.server.close()


def llm(upstream: str, workdir: Path) -> ServeConfig:
    return ServeConfig(
        name=MODEL,
        version="1",
        format="llm",
        revision="aaa",
        upstream=upstream,
        upstream_model="tiny-llm",
        audit_log=workdir / "audit.jsonl",
    )


def onnx(models: Path, **config: Any) -> ServeConfig:
    return ServeConfig(
        name=MODEL, version="1", format="onnx", revision="aaa", model_uri=str(models / "good.onnx"), **config
    )


def audited(path: Path) -> dict[str, Any]:
    line = wait_until(lambda: path.exists() and path.read_text().strip(), 10, "the audit record")
    record: dict[str, Any] = json.loads(line.splitlines()[-1])
    return record


INFER = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [0.5] * 8}]}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "help me"}]}


async def test_a_chat_completion_is_one_trace_from_the_client_to_the_upstream_and_its_audit_record(
    stack: Start, chat_upstream: str, tmp_path: Path
) -> None:
    serving, served = traced("cutover-serve")
    front, fronted = traced("cutover-gateway")
    config = llm(chat_upstream, tmp_path)
    client = (await stack(config, deployment(STABLE), serving, front)).client
    answer = await client.post("/v1/chat/completions", json=CHAT, headers={"traceparent": TRACEPARENT})
    assert answer.status == 200, await answer.text()

    gateway_spans, serving_spans = fronted.get_finished_spans(), served.get_finished_spans()
    assert {trace_of(span) for span in (*gateway_spans, *serving_spans)} == {TRACE}
    request = only(gateway_spans, "POST /v1/chat/completions")
    assert request.kind == SpanKind.SERVER and parent(request) == CALLER
    attempt = only(gateway_spans, "POST")
    assert attempt.kind == SpanKind.CLIENT and parent(attempt) == own(request)
    assert attempt.attributes is not None and attempt.attributes["cutover.revision"] == "aaa"
    answered = only(serving_spans, "POST /v1/chat/completions")
    assert answered.kind == SpanKind.SERVER and parent(answered) == own(attempt)
    assert children(serving_spans, answered) == ["decode", "model", "validate"]
    assert ChatUpstream.seen[-1]["traceparent"] == f"00-{TRACE}-{own(only(serving_spans, 'model'))}-01"
    assert answer.headers["traceparent"] == f"00-{TRACE}-{own(request)}-01"
    record = audited(tmp_path / "audit.jsonl")
    assert (record["trace_id"], record["span_id"]) == (TRACE, own(answered))


async def test_a_streamed_chat_completion_calls_the_upstream_inside_its_model_span_and_carries_its_trace(
    stack: Start, chat_upstream: str, tmp_path: Path
) -> None:
    serving, served = traced("cutover-serve")
    front, fronted = traced("cutover-gateway")
    client = (await stack(llm(chat_upstream, tmp_path), deployment(STABLE), serving, front)).client
    sent = {**CHAT, "stream": True}
    answer = await client.post("/v1/chat/completions", json=sent, headers={"traceparent": TRACEPARENT})
    assert answer.status == 200 and (await answer.read()).endswith(b"data: [DONE]\n\n")
    request = only(fronted.get_finished_spans(), "POST /v1/chat/completions")
    assert answer.headers["traceparent"] == f"00-{TRACE}-{own(request)}-01"
    spans = served.get_finished_spans()
    model = only(spans, "model")
    assert model.attributes is not None and model.attributes["stream"] is True
    assert parent(model) == own(only(spans, "POST /v1/chat/completions"))
    assert ChatUpstream.seen[-1]["traceparent"] == f"00-{TRACE}-{own(model)}-01"


async def test_the_triton_adapter_calls_its_upstream_inside_the_model_span(stack: Start, models: Path) -> None:
    upstream_tracing, upstream_spans = traced("triton")
    upstream = ModelServer(onnx(models), tracing=upstream_tracing)  # it speaks Triton's protocol
    await upstream.load()
    triton = TestServer(upstream.app())
    await triton.start_server()
    try:
        serving, served = traced("cutover-serve")
        url = str(triton.make_url("")).rstrip("/")
        config = ServeConfig(name=MODEL, version="1", format="triton", upstream=url, upstream_model=MODEL)
        client = (await stack(config, deployment(STABLE), serving, Tracing())).client
        answer = await client.post(f"/v2/models/{MODEL}/infer", json=INFER, headers={"traceparent": TRACEPARENT})
        assert answer.status == 200, await answer.text()
    finally:
        await triton.close()
        await upstream.close()
    called = only(upstream_spans.get_finished_spans(), "POST /v2/models/{name}/infer")
    assert parent(called) == own(only(served.get_finished_spans(), "model")) and trace_of(called) == TRACE


async def test_an_inference_request_has_a_span_per_stage_and_its_mirrored_copy_is_a_child_of_the_request(
    stack: Start, models: Path
) -> None:
    serving, served = traced("cutover-serve")
    front, fronted = traced("cutover-gateway")
    config = onnx(models, batching=Batching(max_batch_size=4, max_queue_delay="1ms", max_queue_size=8))
    each = await stack(config, shadowing({}), serving, front)
    answer = await each.client.post(f"/v2/models/{MODEL}/infer", json=INFER, headers={"traceparent": TRACEPARENT})
    assert answer.status == 200, await answer.text()
    await settled(each.gateway)

    gateway_spans, serving_spans = fronted.get_finished_spans(), served.get_finished_spans()
    request = only(gateway_spans, "POST /v2/models/{name}/infer")
    assert parent(request) == CALLER
    assert children(gateway_spans, request) == ["POST", "mirror"]
    answered = {parent(span): span for span in serving_spans if span.kind == SpanKind.SERVER}
    live, mirrored = answered[own(only(gateway_spans, "POST"))], answered[own(only(gateway_spans, "mirror"))]
    stages = ["decode", "encode", "model", "queue", "validate"]
    assert children(serving_spans, live) == children(serving_spans, mirrored) == stages
    queue = next(s for s in serving_spans if s.name == "queue" and parent(s) == own(live))
    model = next(s for s in serving_spans if s.name == "model" and parent(s) == own(live))
    assert queue.start_time is not None and queue.end_time is not None and model.start_time is not None
    assert queue.start_time <= queue.end_time <= model.start_time
    assert {trace_of(span) for span in (*gateway_spans, *serving_spans)} == {TRACE}


async def grpc_infer(service: Any, tracing: Tracing) -> None:
    """One ModelInfer call with tritonclient.grpc, sent the client's ``traceparent``, to
    ``service`` listening with ``tracing``."""
    async with listening(service, "127.0.0.1", 0, max_message_bytes=1 << 20, shutdown_grace=0, tracing=tracing) as port:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        x = sample_models.sample_inputs(1, seed=1)
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        try:
            result = await client.infer(MODEL, [tensor], headers={"traceparent": TRACEPARENT})
        finally:
            await client.close()
    assert np.asarray(result.as_numpy("probabilities")).shape == (1, 3)


async def test_a_grpc_call_takes_its_trace_from_its_metadata(stack: Start, models: Path) -> None:
    serving, served = traced("cutover-serve")
    front, fronted = traced("cutover-gateway")
    each = await stack(onnx(models), deployment(STABLE), serving, front)
    service = GatewayInferenceService(each.gateway)
    await grpc_infer(service, front)
    gateway_spans, serving_spans = fronted.get_finished_spans(), served.get_finished_spans()
    call = only(gateway_spans, "inference.GRPCInferenceService/ModelInfer")
    assert call.kind == SpanKind.SERVER and parent(call) == CALLER and trace_of(call) == TRACE
    attempt = only(gateway_spans, "POST")
    assert parent(attempt) == own(call)
    assert parent(only(serving_spans, "POST /v2/models/{name}/infer")) == own(attempt)


async def test_off_nothing_is_traced_and_the_gateway_passes_the_clients_traceparent_on(
    stack: Start, chat_upstream: str, tmp_path: Path
) -> None:
    serving, served = traced("cutover-serve")
    client = (await stack(llm(chat_upstream, tmp_path), deployment(STABLE), serving, Tracing())).client
    answer = await client.post("/v1/chat/completions", json=CHAT, headers={"traceparent": TRACEPARENT})
    assert answer.status == 200 and "traceparent" not in answer.headers
    assert parent(only(served.get_finished_spans(), "POST /v1/chat/completions")) == CALLER


async def test_a_revision_that_does_not_trace_passes_nothing_on_and_audits_no_trace(
    stack: Start, chat_upstream: str, tmp_path: Path
) -> None:
    client = (await stack(llm(chat_upstream, tmp_path), deployment(STABLE), Tracing(), Tracing())).client
    answer = await client.post("/v1/chat/completions", json=CHAT, headers={"traceparent": TRACEPARENT})
    assert answer.status == 200
    assert ChatUpstream.seen[-1]["traceparent"] is None
    assert "trace_id" not in audited(tmp_path / "audit.jsonl")


class Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: the spans of every export request to ``/v1/traces``."""

    spans: list[Any] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            exported = ExportTraceServiceRequest.FromString(body)
            for resource in exported.resource_spans:
                for scope in resource.scope_spans:
                    Collector.spans.extend(scope.spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    with threaded_http_server(Collector) as url:
        yield url


def test_cutover_serve_exports_its_spans_over_otlp_to_the_standard_endpoint(
    models: Path, collector: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # milliseconds between the exporter's batches
    serving = Serving(tmp_path, "--format", "onnx", "--model-uri", str(models / "good.onnx"), name=MODEL).start()
    try:
        status, _ = serving.post(f"/v2/models/{MODEL}/infer", INFER, {"traceparent": TRACEPARENT})
        assert status == 200

        def exported() -> Any:
            return next((s for s in Collector.spans if s.name == "POST /v2/models/{name}/infer"), None)

        span = wait_until(exported, 10, "the request's span at the collector")
        assert (span.trace_id.hex(), span.parent_span_id.hex()) == (TRACE, CALLER)
        assert {s.name for s in Collector.spans if s.parent_span_id == span.span_id} >= {"decode", "model", "encode"}
    finally:
        assert serving.stop() == 0


async def test_with_a_safety_policy_each_direction_screened_is_a_span(tmp_path: Path) -> None:
    tracing, exported = traced("cutover-serve")
    setup = Setup(tmp_path, Upstream())
    setup.pipeline.tracing = tracing
    with tracing.serving("POST /v1/chat/completions", {"traceparent": TRACEPARENT}):
        await setup.chat("hello there")
    screened = [span.attributes["direction"] for span in exported.get_finished_spans() if span.name == "safety"]
    assert screened == ["input", "output"]


async def test_a_request_its_caller_left_unsampled_records_no_spans_and_passes_its_trace_on(
    stack: Start, chat_upstream: str, tmp_path: Path
) -> None:
    serving, served = traced("cutover-serve")
    client = (await stack(llm(chat_upstream, tmp_path), deployment(STABLE), serving, Tracing())).client
    unsampled = f"00-{TRACE}-{CALLER}-00"
    answer = await client.post("/v1/chat/completions", json=CHAT, headers={"traceparent": unsampled})
    assert answer.status == 200 and served.get_finished_spans() == ()
    passed_on = ChatUpstream.seen[-1]["traceparent"]
    assert passed_on.startswith(f"00-{TRACE}-") and passed_on.endswith("-00")
    assert audited(tmp_path / "audit.jsonl")["trace_id"] == TRACE


async def test_a_grpc_call_to_cutover_serve_is_the_parent_of_its_stages(models: Path) -> None:
    serving, served = traced("cutover-serve")
    server = ModelServer(onnx(models), tracing=serving)
    await server.load()
    try:
        await grpc_infer(InferenceService(server), serving)
    finally:
        await server.close()
    spans = served.get_finished_spans()
    call = only(spans, "inference.GRPCInferenceService/ModelInfer")
    assert call.kind == SpanKind.SERVER and parent(call) == CALLER and trace_of(call) == TRACE
    assert children(spans, call) == ["decode", "encode", "model", "validate"]


async def test_a_grpc_answer_carries_the_traceparent_of_its_call(models: Path) -> None:
    serving, served = traced("cutover-serve")
    server = ModelServer(onnx(models), tracing=serving)
    try:
        async with (
            listening(
                InferenceService(server), "127.0.0.1", 0, max_message_bytes=1024, shutdown_grace=0, tracing=serving
            ) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            sent = (("traceparent", TRACEPARENT),)
            call = GRPCInferenceServiceStub(channel).ServerLive(ServerLiveRequest(), metadata=sent)
            assert (await call).live
            metadata = dict(await call.initial_metadata())
    finally:
        await server.close()
    span = only(served.get_finished_spans(), "inference.GRPCInferenceService/ServerLive")
    assert parent(span) == CALLER and metadata["traceparent"] == f"00-{TRACE}-{own(span)}-01"
