"""``cutover serve``: one model revision per process behind the Open Inference Protocol v2.

Routes (all errors are ``{"error": "..."}`` with a 4xx, or 5xx only for a model that fails):

=======  ===============================================  ===========================================
GET      /v2/health/live, /v2/health/ready                 200, or 503 while loading or draining
GET      /v2                                               server metadata and extensions
GET      /v2/models/{name}[/versions/{v}]                  model metadata
GET      /v2/models/{name}[/versions/{v}]/ready            200 or 503
GET      /v2/models/{name}[/versions/{v}]/config           Triton-style config (for perf_analyzer)
POST     /v2/models/{name}[/versions/{v}]/infer            JSON or binary tensors
POST     /v1/chat/completions                              OpenAI-style chat (llm models)
GET      /v1/models                                        OpenAI-style model list
GET      /metrics                                          Prometheus
=======  ===============================================  ===========================================

The request path: admission (load shedding), decode, validation against the schema, the
out-of-distribution score, the model (through the batcher when batching is on), the
confidence check and fallback chain, the response, then metrics and the audit record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cutover.api.v1alpha1 import seconds
from cutover.api.v1alpha1.modeldeployment import Batching, FallbackSpec, OutOfDistribution, TensorSpec

from . import adapters, storage
from .adapters.base import Adapter, InvalidInput, NotSupported, TensorInfo
from .audit import AuditLog, input_digest, summarize_outputs
from .batching import Batcher, BatchStats, QueueFull
from .breaker import CircuitBreaker
from .fallback import REVISION_HEADER, FallbackChain, Link, remote, safe_default, top1_confidence
from .lifecycle import until_signalled
from .metrics import ServingMetrics
from .ood import MahalanobisScorer, load_statistics
from .protocol import HEADER_LENGTH, ProtocolError, RawInput, decode_request, encode_response, tensor_bytes
from .validation import validate

log = logging.getLogger("cutover.serving")
SERVER_NAME = "cutover"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_configuration"]
TRITON_TYPES = {"BYTES": "TYPE_STRING"}


@dataclass
class ServeConfig:
    """Everything ``cutover serve`` takes; the operator's builder sets it from the ModelDeployment."""

    name: str
    version: str
    format: str
    revision: str = "local"
    namespace: str = "default"
    host: str = "0.0.0.0"
    port: int = 8080
    model_uri: str | None = None
    checksum: str | None = None
    upstream: str | None = None
    upstream_model: str | None = None
    upstream_api_key: str | None = None
    upstream_timeout: float = 30.0
    inputs: Sequence[TensorSpec] = ()
    outputs: Sequence[TensorSpec] = ()
    batching: Batching | None = None
    out_of_distribution: OutOfDistribution | None = None
    fallback: FallbackSpec | None = None
    previous_url: str | None = None
    """The previous version's endpoint, the first link of the fallback chain."""
    confidence_output: str | None = None
    """The output whose top class is the prediction's confidence; default: the first output."""
    audit_log: Path | None = None
    max_in_flight: int = 1024
    """Requests in progress beyond which new ones are shed with 503 (without batching)."""
    max_request_bytes: int = 64 << 20
    threads: int = 0
    """Intra-op threads of the model runtime; 0 lets it choose."""
    device: str = "auto"
    cache_dir: Path = field(default_factory=lambda: Path("/tmp/cutover-models"))
    shutdown_delay: float = 0.0
    """Seconds between SIGTERM (readiness turns 503) and closing the listener, so endpoints update."""
    shutdown_grace: float = 30.0
    """Seconds in-flight requests get to finish after the listener closes."""


def _schema(declared: Sequence[TensorSpec], discovered: Sequence[TensorInfo], kind: str) -> list[TensorInfo]:
    """The model's own tensors, with the declared value ranges; a declared tensor that the model
    does not have, or has with another type, is an error at load time rather than at request time."""
    infos = {
        spec.name: TensorInfo(
            spec.name,
            spec.datatype,
            tuple(spec.shape),
            spec.range.min if spec.range else None,
            spec.range.max if spec.range else None,
        )
        for spec in declared
    }
    if not discovered:
        return list(infos.values())
    merged = []
    for info in discovered:
        spec = infos.pop(info.name, None)
        if spec is None:
            merged.append(info)
            continue
        if spec.datatype != info.datatype or len(spec.shape) != len(info.shape):
            raise ValueError(
                f"declared {kind} {info.name!r} is {spec.datatype} {list(spec.shape)}, "
                f"but the model has {info.datatype} {list(info.shape)}"
            )
        merged.append(TensorInfo(info.name, info.datatype, info.shape, spec.min, spec.max))
    if infos:
        raise ValueError(
            f"declared {kind} {', '.join(infos)} not in the model ({', '.join(i.name for i in discovered)})"
        )
    return merged


class ModelServer:
    def __init__(self, config: ServeConfig, adapter: Adapter | None = None) -> None:
        self.config = config
        self.metrics = ServingMetrics(
            config.namespace,
            config.name,
            config.revision,
            lambda: self.in_flight,
            scores_out_of_distribution=config.out_of_distribution is not None,
        )
        self.adapter = adapter
        self.loaded = False
        self.load_error: str | None = "loading"
        self.draining = False
        self.in_flight = 0
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []
        self.batcher: Batcher | None = None
        self.ood: MahalanobisScorer | None = None
        self.fallback: FallbackChain | None = None
        self.audit: AuditLog | None = None
        self._raw_input: RawInput | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._session: aiohttp.ClientSession | None = None
        self._dropped = 0
        self._model_path: Path | None = None

    # ---- loading ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Load until it works. A model that cannot load leaves the process live but not ready,
        with the reason on the ready endpoint, instead of a crash loop."""
        delay = 1.0
        while not self.loaded:
            try:
                await self._load()
            except Exception as error:
                self.load_error = f"model failed to load: {error}"
                log.error("%s; retrying in %.0f s", self.load_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _load(self) -> None:
        config = self.config
        if self.adapter is None:
            path = None
            if config.model_uri:
                path = await storage.fetch(config.model_uri, config.checksum, config.cache_dir)
            self._model_path = path
            self.adapter = adapters.create(config, path)
        await self.adapter.load()
        self._closers.append(self.adapter.close)
        self.inputs = _schema(config.inputs, self.adapter.inputs, "input")
        self.outputs = _schema(config.outputs, self.adapter.outputs, "output")
        if len(self.inputs) == 1 and self.inputs[0].datatype != "BYTES":
            only = self.inputs[0]
            self._raw_input = RawInput(only.name, only.datatype, only.shape)
        if config.batching is not None and self.adapter.batchable:
            self.batcher = Batcher(
                self.adapter.infer,
                max_batch_size=config.batching.max_batch_size,
                max_queue_delay=seconds(config.batching.max_queue_delay),
                max_queue_size=config.batching.max_queue_size,
                on_batch=self._observe_batch,
            )
            self._closers.insert(0, self.batcher.close)
        elif config.batching is not None:
            log.warning("batching is off: the model's tensors have no variable first (batch) dimension")
        if config.out_of_distribution is not None:
            ood = config.out_of_distribution
            if ood.input not in {t.name for t in self.inputs}:
                raise ValueError(f"outOfDistribution.input {ood.input!r} is not an input of the model")
            self.ood = MahalanobisScorer(
                await asyncio.to_thread(load_statistics, self._beside_model(ood.statistics_uri))
            )
            shape = next(t.shape for t in self.inputs if t.name == ood.input)
            features = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            if min(shape[1:], default=1) > 0 and features != self.ood.features:
                raise ValueError(
                    f"the training statistics have {self.ood.features} features; input {ood.input!r} has {features}"
                )
        if config.fallback is not None and config.fallback.confidence_threshold is not None:
            self.fallback = await self._fallback_chain(config.fallback)
        if config.audit_log is not None:
            self.audit = AuditLog(config.audit_log)
            self._closers.append(self._close_audit)
        self.loaded, self.load_error = True, None
        log.info(
            "model %s version %s (revision %s) ready: inputs %s, outputs %s%s",
            config.name,
            config.version,
            config.revision,
            [i.metadata() for i in self.inputs],
            [o.metadata() for o in self.outputs],
            f", batching up to {self.batcher.max_batch_size}" if self.batcher else "",
        )

    def _beside_model(self, uri: str) -> str:
        """A relative statistics path is read beside the model file ("training-stats.json")."""
        if "://" in uri or uri.startswith("/") or not self._model_path:
            return uri
        return str(self._model_path.parent / uri)

    async def _fallback_chain(self, spec: FallbackSpec) -> FallbackChain:
        def breaker() -> CircuitBreaker:
            return CircuitBreaker(spec.circuit_breaker.failure_threshold, spec.circuit_breaker.open_seconds)

        links: list[Link] = []
        if spec.previous_version and self.config.previous_url:
            previous = remote(self._client(), self.config.previous_url, self.config.name, 5.0, self.config.revision)
            links.append(Link("previous", previous, breaker()))
        if spec.baseline is not None:
            path = await storage.fetch(spec.baseline.storage_uri, None, self.config.cache_dir)
            baseline = adapters.local(
                spec.baseline.format, path, threads=self.config.threads, device=self.config.device
            )
            await baseline.load()
            self._closers.append(baseline.close)
            links.append(Link("baseline", baseline.infer, breaker()))
        if spec.safe_default:
            links.append(Link("safe_default", safe_default(spec.safe_default)))
        for link in links:
            if link.breaker is not None:
                self.metrics.breaker(link.name, link.breaker.state)
        assert spec.confidence_threshold is not None
        return FallbackChain(
            links,
            threshold=spec.confidence_threshold,
            confidence_output=self.config.confidence_output or (self.outputs[0].name if self.outputs else None),
            on_breaker=self.metrics.breaker,
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
            self._closers.append(self._session.close)
        return self._session

    async def _close_audit(self) -> None:
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)

    async def close(self) -> None:
        for closer in self._closers:
            try:
                await closer()
            except Exception:
                log.exception("while closing")

    def _observe_batch(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.size)
        for waited in stats.queue_seconds:
            self.metrics.queue.observe(waited)

    # ---- HTTP ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_request_bytes, middlewares=[self._errors])
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        app.router.add_get("/v2/health/live", self.live)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2", self.server_metadata)
        for prefix in (model, versioned):
            app.router.add_get(prefix, self.model_metadata)
            app.router.add_get(prefix + "/ready", self.model_ready)
            app.router.add_get(prefix + "/config", self.model_config)
            app.router.add_post(prefix + "/infer", self.infer)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.openai_models)
        app.router.add_get("/metrics", self.prometheus)
        return app

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Errors become ``{"error"}`` bodies; every answer names the revision; infer and chat are counted."""
        started = time.perf_counter()
        response: web.StreamResponse
        try:
            response = await handler(request)
        except ProtocolError as error:
            headers = {"Retry-After": "1"} if error.status == 503 else None
            response = web.json_response({"error": str(error)}, status=error.status, headers=headers)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            response = web.json_response({"error": error.reason}, status=error.status)
        except Exception as error:
            log.exception("%s %s failed", request.method, request.path)
            response = web.json_response({"error": f"internal error: {error}"}, status=500)
        response.headers[REVISION_HEADER] = self.config.revision
        if request.path.endswith("/infer") or request.path == "/v1/chat/completions":
            self.metrics.request(response.status, time.perf_counter() - started)
        return response

    def _model(self, request: web.Request) -> None:
        name, version = request.match_info["name"], request.match_info.get("version")
        if name != self.config.name:
            raise ProtocolError(f"unknown model {name!r}; this server serves {self.config.name!r}", 404)
        if version is not None and version != self.config.version:
            raise ProtocolError(
                f"unknown version {version!r} of model {name!r}; this server serves {self.config.version!r}", 404
            )

    def _not_ready(self) -> str | None:
        if self.draining:
            return "shutting down"
        return self.load_error

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        reason = self._not_ready()
        if reason is None and self.adapter is not None and not await self.adapter.ready():
            reason = "the upstream is not ready"
        if reason is not None:
            return web.json_response({"ready": False, "error": reason}, status=503)
        return web.json_response({"ready": True})

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})

    def _require_loaded(self) -> Adapter:
        if not self.loaded or self.adapter is None:
            raise ProtocolError(f"model {self.config.name!r} is not ready: {self.load_error}", 503)
        return self.adapter

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._model(request)
        adapter = self._require_loaded()
        return web.json_response(
            {
                "name": self.config.name,
                "versions": [self.config.version],
                "platform": adapter.platform,
                "inputs": [t.metadata() for t in self.inputs],
                "outputs": [t.metadata() for t in self.outputs],
            }
        )

    async def model_ready(self, request: web.Request) -> web.Response:
        self._model(request)
        reason = self._not_ready()
        if reason is not None:
            return web.json_response({"name": self.config.name, "ready": False, "error": reason}, status=503)
        return web.json_response({"name": self.config.name, "ready": True})

    async def model_config(self, request: web.Request) -> web.Response:
        """Triton's model-configuration extension, which perf_analyzer reads."""
        self._model(request)
        adapter = self._require_loaded()
        batch = self.batcher.max_batch_size if self.batcher else 0

        def tensor(info: TensorInfo) -> dict[str, Any]:
            dims = list(info.shape[1:] if batch else info.shape)
            return {
                "name": info.name,
                "data_type": TRITON_TYPES.get(info.datatype, f"TYPE_{info.datatype}"),
                "dims": dims,
            }

        return web.json_response(
            {
                "name": self.config.name,
                "platform": adapter.platform,
                "max_batch_size": batch,
                "input": [tensor(t) for t in self.inputs],
                "output": [tensor(t) for t in self.outputs],
            }
        )

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _admit(self) -> None:
        # While draining, requests are still served: endpoints take a moment to drop this pod,
        # and the listener closes only after shutdown_delay.
        if self.in_flight >= self.config.max_in_flight:
            raise ProtocolError(f"overloaded: {self.in_flight} requests in progress", 503)

    async def infer(self, request: web.Request) -> web.Response:
        self._model(request)
        adapter = self._require_loaded()
        self._admit()
        self.in_flight += 1
        started = time.perf_counter()
        try:
            body = await request.read()
            infer = decode_request(body, request.headers.get(HEADER_LENGTH), self._raw_input)
            validate(infer.inputs, self.inputs)
            ood_scores = self._score_ood(infer.inputs)
            outputs = await self._predict(adapter, infer.inputs)
            confidence = top1_confidence(outputs, self.fallback.confidence_output if self.fallback else None)
            self._observe_prediction(outputs, confidence)
            link = None
            if self.fallback is not None and self.fallback.needed(confidence):
                answer = await self.fallback.answer(infer.inputs)
                if answer is not None:
                    outputs, link = answer.outputs, answer.link
                    self.metrics.fallback(link, "low_confidence")
            payload, header_length = encode_response(
                self.config.name, self.config.version, infer, outputs, {"fallback": link} if link else None
            )
            headers = {"Content-Type": "application/json"}
            if header_length is not None:
                headers = {HEADER_LENGTH: str(header_length), "Content-Type": "application/octet-stream"}
            if self.audit is not None:
                self._audit(
                    infer.id or request.headers.get("X-Request-Id"),
                    started,
                    input_digest=input_digest(tensor_bytes(a) for a in infer.inputs.values()),
                    outputs=summarize_outputs(outputs),
                    confidence=None if confidence is None else [round(c, 6) for c in confidence[:32]],
                    ood_score=None if ood_scores is None else [round(float(v), 4) for v in ood_scores[:32]],
                    fallback=link,
                )
            return web.Response(body=payload, headers=headers)
        finally:
            self.in_flight -= 1

    async def _predict(self, adapter: Adapter, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            if self.batcher is not None:
                return await self.batcher.submit(inputs)
            return await adapter.infer(inputs)
        except QueueFull as error:
            raise ProtocolError(f"overloaded: {error}", 503) from None
        except (InvalidInput, NotSupported) as error:
            raise ProtocolError(str(error)) from None
        except ProtocolError:
            raise
        except Exception as error:
            log.warning("model %s failed: %s", self.config.name, error)
            raise ProtocolError(f"model failed: {error}", 500) from None

    def _score_ood(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
        if self.ood is None or self.config.out_of_distribution is None:
            return None
        spec = self.config.out_of_distribution
        array = inputs[spec.input]
        rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)
        scores = self.ood.score(rows.astype(np.float64, copy=False))
        for score in scores:
            self.metrics.ood_score.observe(float(score))
        beyond = int((scores > spec.threshold).sum())
        if beyond:
            self.metrics.out_of_distribution(beyond)
        return scores

    def _observe_prediction(self, outputs: Mapping[str, np.ndarray], confidence: list[float] | None) -> None:
        first = next(iter(outputs.values()), None)
        rows = first.shape[0] if first is not None and first.ndim else 1
        self.metrics.predictions.inc(rows)
        if confidence is not None:
            for value in confidence:
                self.metrics.confidence.observe(value)

    def _audit(self, request_id: str | None, started: float, **fields: Any) -> None:
        """One audit record: who answered, when and how fast, plus the request's own ``fields``
        (input_digest, outputs, confidence, ood_score, fallback)."""
        assert self.audit is not None
        self.audit.record(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "request_id": request_id or uuid.uuid4().hex,
                "namespace": self.config.namespace,
                "model": self.config.name,
                "version": self.config.version,
                "revision": self.config.revision,
                "confidence": None,
                "ood_score": None,
                "fallback": None,
                **fields,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "status": 200,
            }
        )
        self._count_dropped()

    def _count_dropped(self) -> None:
        assert self.audit is not None
        if self.audit.dropped > self._dropped:
            self.metrics.audit_dropped.inc(self.audit.dropped - self._dropped)
            self._dropped = self.audit.dropped

    async def chat(self, request: web.Request) -> web.Response:
        adapter = self._require_loaded()
        self._admit()
        started = time.perf_counter()
        try:
            body = await request.json()
        except ValueError as error:
            raise ProtocolError(f"malformed JSON: {error}") from None
        chat_request = _chat_request(body, self.config.name)
        self.in_flight += 1
        try:
            try:
                response = await adapter.chat(chat_request)
            except NotSupported as error:
                raise ProtocolError(str(error), 404) from None
            except InvalidInput as error:
                raise ProtocolError(str(error)) from None
            except ProtocolError:
                raise
            except Exception as error:
                log.warning("chat upstream failed: %s", error)
                raise ProtocolError(f"upstream failed: {error}", 502) from None
            self.metrics.predictions.inc()
            if self.audit is not None:
                choices = response.get("choices") or [{}]
                self._audit(
                    request.headers.get("X-Request-Id") or response.get("id"),
                    started,
                    input_digest=input_digest([str(chat_request.get("messages")).encode()]),
                    outputs={"content": (choices[0].get("message") or {}).get("content")},
                )
            return web.json_response(response)
        finally:
            self.in_flight -= 1

    async def openai_models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.config.name, "object": "model", "owned_by": "cutover"}]}
        )


def _chat_request(body: Any, model: str) -> dict[str, Any]:
    """The checks an OpenAI-compatible server makes before the upstream sees the request."""
    if not isinstance(body, dict):
        raise ProtocolError("the request must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("messages must be a non-empty list")
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool"):
            raise ProtocolError(f"messages[{position}] needs a role of system, user, assistant or tool")
        content = message.get("content")
        if not isinstance(content, str | list | None):
            raise ProtocolError(f"messages[{position}].content must be a string or a list of parts")
    if body.get("model") not in (None, model):
        raise ProtocolError(f"unknown model {body.get('model')!r}; this server serves {model!r}", 404)
    if body.get("stream"):
        raise ProtocolError("stream: true is not supported by this endpoint; send stream: false")
    return body


async def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT; then drain: readiness turns 503, the listener closes after
    ``shutdown_delay``, and in-flight requests get ``shutdown_grace`` seconds to finish."""
    server = ModelServer(config)
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=config.shutdown_grace)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    log.info("listening on http://%s:%d", config.host, runner.addresses[0][1])
    loading = asyncio.create_task(server.load())
    await until_signalled()
    log.info("draining: %d requests in progress", server.in_flight)
    server.draining = True
    loading.cancel()
    await asyncio.sleep(config.shutdown_delay)
    await runner.cleanup()
    await server.close()
    log.info("stopped")
