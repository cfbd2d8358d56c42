"""``cutover serve``: one model revision per process behind the Open Inference Protocol v2.

Routes (errors are ``{"error": "..."}``, on ``/v1`` OpenAI's error object, with a 4xx, or 5xx only
for a model that fails):

=======  ===============================================  ===========================================
GET      /v2/health/live, /v2/health/ready                 200, or 503 while loading or draining
GET      /v2                                               server metadata and extensions
GET      /v2/models/{name}[/versions/{v}]                  model metadata
GET      /v2/models/{name}[/versions/{v}]/ready            200 or 503
GET      /v2/models/{name}[/versions/{v}]/config           Triton-style config (for perf_analyzer)
GET      /v2/models[/{name}[/versions/{v}]]/stats          Triton's statistics extension
POST     /v2/models/{name}[/versions/{v}]/infer            JSON or binary tensors
POST     /v2/models/{name}[/versions/{v}]/explain          an infer body: attributions (``explain.py``)
POST     /v2/repository/index                              Triton's repository index: the one model
POST     /v2/repository/models/{name}/load|unload          refused: 403 (``NotAllowed``)
POST     /v1/chat/completions                              OpenAI-style chat (llm models), streamed as SSE
GET      /v1/models                                        OpenAI-style model list
GET      /metrics                                          Prometheus
=======  ===============================================  ===========================================

This module only wires: the model is loaded by ``loading.py``, a request is answered by the
HTTP-free ``pipeline.py``, errors become JSON bodies and the listener drains in ``http.py``.
Every answer names the revision that answered (``Cutover-Revision``); infer and chat answers
are counted by status code. With ``--grpc-port`` the same model is served over gRPC too
(``grpc_server.py``), from the same plain values: ``readiness()``, ``description()``,
``metadata()``, ``triton_config()``, ``statistics()``, ``index()`` and the pipeline.

With ``--safety-policy`` the server follows that file (``serving/safety/source.py``) from the
start, alongside loading the model; until a valid policy is applied, infer and chat answer
``SafetyUnavailable`` (503) and readiness says why, so nothing is ever answered unfiltered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import web

from cutover.api.contract import REQUEST_ID_HEADER, REVISION_HEADER

from . import grpc_server, http
from .adapters.base import Adapter, TensorInfo
from .attribution_sampling import AttributionSampler
from .compression import compressed
from .config import ServeConfig
from .errors import ModelNotFound, ModelNotReady, NotAllowed, ServingError
from .explain import Explainer
from .explain import refused as explanations_refused
from .lifecycle import until_signalled
from .loading import Loader
from .metrics import ServingMetrics
from .offload import Offload
from .openai import DONE, error_body, error_object, event, model_list
from .pipeline import Admission, ChatStream, Pipeline
from .protocol import HEADER_LENGTH, decode_index_request
from .safety.guard import Guard
from .safety.source import PolicyFile
from .tracing import Tracing, propagated
from .tracing import middleware as tracing_middleware

__all__ = ["ModelServer", "ServeConfig", "serve"]

log = logging.getLogger("cutover.serving")
SERVER_NAME = "cutover"
SERVER_VERSION = "0.1.0"
EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "explain",
    "model_configuration",
    "model_repository",
    "statistics",
]
"""Triton's extensions this server implements (``model_repository``: the index; loading and
unloading are refused, as Triton refuses them when it does not control models), and cutover's
``explain`` (``serving/explain.py``)."""
TRITON_TYPES = {"BYTES": "TYPE_STRING"}
STREAMED_STATUS = web.ResponseKey("streamed_status", int)
"""How a streamed chat answer counts (``ChatStream.status``): its HTTP status was 200 when it began."""


class ModelServer:
    """The routes of one model revision. ``pipeline`` is None until the model has loaded
    (``load()``); until then the model's routes answer ``ModelNotReady`` (503) with the reason.
    ``adapter`` replaces the one ``config`` names (tests pass their own); ``tracing`` is off
    unless given (``serving/tracing.py``)."""

    def __init__(self, config: ServeConfig, adapter: Adapter | None = None, tracing: Tracing | None = None) -> None:
        self.config = config
        self.tracing = tracing or Tracing()
        self.admission = Admission(config.max_in_flight)
        self.metrics = ServingMetrics(
            config.namespace,
            config.name,
            config.revision,
            lambda: self.admission.in_flight,
            scores_out_of_distribution=config.out_of_distribution is not None,
            caches_predictions=config.prediction_cache is not None,
        )
        self.loader = Loader(config, self.metrics, adapter)
        self.pipeline: Pipeline | None = None
        self.explainer: Explainer | None = None
        self.sampler: AttributionSampler | None = None
        self.offload = Offload()
        """Decodes and encodes large bodies in a worker process, so probes keep their answer time."""
        self.draining = False
        self.safety: Guard | None = None
        self.policy_file: PolicyFile | None = None
        if config.safety_policy is not None:
            self.safety = Guard(
                self.metrics.safety,
                config.namespace,
                config.name,
                config.revision,
                max_characters=config.safety_max_characters,
            )
            self.policy_file = PolicyFile(
                self.safety, config.safety_policy, config.safety_secrets_dir, config.safety_poll_interval
            )
        self._following: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Start following the SafetyPolicy file (if any), then load the model (retrying until
        it works) and serve it."""
        if self.policy_file is not None and self._following is None:
            self._following = asyncio.get_running_loop().create_task(self.policy_file.run(), name="safety-policy")
        model = await self.loader.load()
        self.explainer = Explainer(self.config, model, self.metrics.registry)
        if self.config.explain_sample_rate:
            self.sampler = AttributionSampler(self.explainer, self.config.explain_sample_rate, self.metrics)
        self.pipeline = Pipeline(
            self.config,
            model,
            self.metrics,
            self.admission,
            safety=self.safety,
            offload=self.offload,
            tracing=self.tracing,
            sampler=self.sampler,
        )

    async def close(self) -> None:
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
        if self.safety is not None:
            await self.safety.close()
        self.offload.close()
        if self.sampler is not None:
            self.sampler.close()
        if self.explainer is not None:
            self.explainer.close()
        await self.loader.close()

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_request_bytes,
            middlewares=[tracing_middleware(self.tracing, _counted), http.json_errors(self._answered, error_body)],
            handler_args=http.OWN_DECODING,
        )
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        app.router.add_get("/v2/health/live", http.live)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2", self.server_metadata)
        app.router.add_get("/v2/models/stats", self.model_statistics)  # before {name} takes "stats"
        app.router.add_post("/v2/repository/index", self.repository_index)
        app.router.add_post("/v2/repository/models/{name}/{action:load|unload}", self.model_control)
        for prefix in (model, versioned):
            app.router.add_get(prefix, self.model_metadata)
            app.router.add_get(prefix + "/ready", self.model_ready)
            app.router.add_get(prefix + "/config", self.model_config)
            app.router.add_get(prefix + "/stats", self.model_statistics)
            app.router.add_post(prefix + "/infer", self.infer)
            app.router.add_post(prefix + "/explain", self.explain)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.openai_models)
        app.router.add_get("/metrics", http.prometheus(self.metrics.registry))
        return app

    def _answered(self, request: web.Request, response: web.StreamResponse, started: float) -> None:
        """Every answer names the revision; infer and chat answers are counted by status."""
        response.headers[REVISION_HEADER] = self.config.revision
        if _counted(request):
            self.metrics.request(response.get(STREAMED_STATUS, response.status), time.perf_counter() - started)

    def _model(self, request: web.Request) -> None:
        """Raises ``ModelNotFound`` unless the path names this server's model (and version)."""
        self.serves(request.match_info["name"], request.match_info.get("version"))

    def serves(self, name: str, version: str | None) -> None:
        """Raises ``ModelNotFound`` unless ``name`` (and ``version``, when not None or empty) is
        this server's model."""
        if name != self.config.name:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {self.config.name!r}")
        if version and version != self.config.version:
            raise ModelNotFound(
                f"unknown version {version!r} of model {name!r}; this server serves {self.config.version!r}"
            )

    def loaded(self) -> Pipeline:
        """The pipeline of the loaded model; raises ``ModelNotReady`` while there is none."""
        if self.pipeline is None:
            raise ModelNotReady(f"model {self.config.name!r} is not ready: {self.loader.error}")
        return self.pipeline

    def model_readiness(self) -> str | None:
        """Why the model is not ready (None: it is)."""
        if self.draining:
            return "shutting down"
        if self.loader.error is None and self.safety is not None and self.safety.policy is None:
            return f"no safety policy applied: {self.safety.error}"
        return self.loader.error

    async def readiness(self) -> str | None:
        """Why the server is not ready to answer (None: it is); the model's own readiness is
        ``model_readiness()``, which does not ask the upstream."""
        reason = self.model_readiness()
        if reason is None and self.pipeline is not None and not await self.pipeline.model.adapter.ready():
            reason = f"the upstream is not ready: {self.pipeline.model.adapter.not_ready_reason or 'it says so'}"
        return reason

    async def ready(self, request: web.Request) -> web.Response:
        return http.readiness(await self.readiness())

    async def server_metadata(self, request: web.Request) -> web.Response:
        return http.json_body(self.description())

    def description(self) -> dict[str, Any]:
        """The server's metadata (Open Inference Protocol): name, version, extensions."""
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._model(request)
        return http.json_body(self.metadata())

    def metadata(self) -> dict[str, Any]:
        """The model's metadata (Open Inference Protocol); raises ``ModelNotReady`` until loaded."""
        model = self.loaded().model
        return {
            "name": self.config.name,
            "versions": [self.config.version],
            "platform": model.adapter.platform,
            "inputs": [t.metadata() for t in model.inputs],
            "outputs": [t.metadata() for t in model.outputs],
        }

    async def model_ready(self, request: web.Request) -> web.Response:
        self._model(request)
        return http.readiness(self.model_readiness(), name=self.config.name)

    async def model_config(self, request: web.Request) -> web.Response:
        """Triton's model-configuration extension, which perf_analyzer reads."""
        self._model(request)
        return http.json_body(self.triton_config())

    def triton_config(self) -> dict[str, Any]:
        """Triton's model configuration (``model_config.proto`` in JSON); raises ``ModelNotReady``
        until loaded."""
        model = self.loaded().model
        batch = model.batcher.max_batch_size if model.batcher is not None else 0

        def tensor(info: TensorInfo) -> dict[str, object]:
            dims = list(info.shape[1:] if batch else info.shape)
            return {
                "name": info.name,
                "data_type": TRITON_TYPES.get(info.datatype, f"TYPE_{info.datatype}"),
                "dims": dims,
            }

        return {
            "name": self.config.name,
            "platform": model.adapter.platform,
            "max_batch_size": batch,
            "input": [tensor(t) for t in model.inputs],
            "output": [tensor(t) for t in model.outputs],
        }

    async def infer(self, request: web.Request) -> web.Response:
        self._model(request)
        answer = await self.loaded().infer(
            lambda: http.request_body(request, self.config.max_request_bytes),
            request.headers.get(HEADER_LENGTH),
            request.headers.get(REQUEST_ID_HEADER),
        )
        if answer.header_length is None:
            return compressed(request, web.Response(body=answer.body, headers={"Content-Type": "application/json"}))
        headers = {HEADER_LENGTH: str(answer.header_length), "Content-Type": "application/octet-stream"}
        return compressed(request, web.Response(body=answer.body, headers=headers))

    async def explain(self, request: web.Request) -> web.Response:
        """Feature attributions of an infer body's rows, off the hot path (``serving/explain.py``);
        not counted with infer requests."""
        self._model(request)
        refusal = explanations_refused(self.config)
        if refusal is not None:
            raise refusal
        self.loaded()
        assert self.explainer is not None
        body = await http.request_body(request, self.config.max_request_bytes)
        answer = await self.explainer.explain(
            body, request.headers.get(HEADER_LENGTH), request.headers.get(REQUEST_ID_HEADER)
        )
        return compressed(request, http.json_body(answer))

    async def model_statistics(self, request: web.Request) -> web.Response:
        """Triton's statistics extension, for this server's model (``/v2/models/stats``: every
        model, which is the one)."""
        if "name" in request.match_info:
            self._model(request)
        return http.json_body(self.statistics())

    def statistics(self) -> dict[str, Any]:
        """Triton's statistics of the model (``serving/statistics.py``), from the start."""
        return {"model_stats": [self.metrics.statistics.json(self.config.name, self.config.version)]}

    async def repository_index(self, request: web.Request) -> web.Response:
        """Triton's model repository index: the one model this server serves, with its state.
        The body may be empty or ``{"ready": true}`` (only ready models)."""
        ready_only = decode_index_request(await http.request_body(request, self.config.max_request_bytes))
        return http.json_body(self.index(ready_only=ready_only))

    def index(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        """The repository index: name, version, state (READY, LOADING or UNAVAILABLE) and the
        reason it is not ready ("" when it is)."""
        reason = self.model_readiness()
        state = "READY" if reason is None else "LOADING" if reason == "loading" else "UNAVAILABLE"
        if ready_only and reason is not None:
            return []
        return [{"name": self.config.name, "version": self.config.version, "state": state, "reason": reason or ""}]

    async def model_control(self, request: web.Request) -> web.Response:
        """Loading and unloading models (Triton's model repository extension): refused."""
        raise self.control_refused(request.match_info["action"], request.match_info["name"])

    def control_refused(self, action: str, model: str) -> NotAllowed:
        """The refusal of a request to ``action`` ("load" or "unload") ``model``."""
        return NotAllowed(
            f"cannot {action} model {model!r}: this server serves revision {self.config.revision} of "
            f"{self.config.name!r} only; the cutover operator decides which model a pod serves "
            "(change the ModelDeployment)"
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        pipeline = self.loaded()
        answer = await pipeline.chat(
            lambda: http.request_json(request, self.config.max_request_bytes), request.headers.get(REQUEST_ID_HEADER)
        )
        if isinstance(answer, dict):
            return compressed(request, http.json_body(answer))
        return await self._stream(request, answer)

    async def _stream(self, request: web.Request, stream: ChatStream) -> web.StreamResponse:
        """Send a started chat stream as server-sent events (``serving/openai.py``), each chunk
        sent as it comes (the chunks of one upstream read in one write, ``http.EventStream``); a
        failure after the start is an error event. The request is
        counted with ``stream.status`` once the stream ended."""
        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            REVISION_HEADER: self.config.revision,
        }
        response = http.EventStream(headers=propagated(headers))  # the request's traceparent, when traced
        async with contextlib.aclosing(stream):
            try:
                await response.prepare(request)
                try:
                    async for chunk in stream:
                        await response.send(event(chunk))
                    await response.write_eof(DONE)
                except ServingError as error:
                    await response.write_eof(event(error_object(error.status, str(error))))
            except ConnectionResetError:  # the client left: closing the stream stops the upstream
                log.info("chat stream closed by the client")
            finally:
                response.abandon()  # nothing, once written whole
        response[STREAMED_STATUS] = stream.status
        return response

    async def openai_models(self, request: web.Request) -> web.Response:
        return http.json_body(model_list(self.config.name))


def _counted(request: web.Request) -> bool:
    """Whether a request is a model call (infer or chat): counted by status, and traced."""
    return request.path.endswith("/infer") or request.path == "/v1/chat/completions"


async def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT; then drain: readiness turns 503, the listener closes after
    ``shutdown_delay``, and in-flight requests get ``shutdown_grace`` seconds to finish."""
    server = ModelServer(config, tracing=Tracing.exporting("cutover-serve", config.otlp_endpoint))
    async with (
        http.listening(server.app(), config.host, config.port, backlog=1024, shutdown_grace=config.shutdown_grace),
        grpc_server.listening(
            grpc_server.InferenceService(server),
            config.host,
            config.grpc_port,
            max_message_bytes=config.max_request_bytes,
            shutdown_grace=config.shutdown_grace,
            tracing=server.tracing,
        ),
    ):
        loading = asyncio.create_task(server.load())
        await until_signalled()
        log.info("draining: %d requests in progress", server.admission.in_flight)
        server.draining = True
        loading.cancel()
        await asyncio.sleep(config.shutdown_delay)
    await server.close()
    server.tracing.close()
    log.info("stopped")
