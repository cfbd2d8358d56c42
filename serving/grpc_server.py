"""``cutover serve --grpc-port``: the Open Inference Protocol over gRPC (KServe v2's
``inference.GRPCInferenceService``), beside HTTP in the same event loop, so that
``tritonclient.grpc`` and KServe's gRPC clients work unchanged.

=================  ============================================================================
ServerLive         true while the process answers
ServerReady        as ``/v2/health/ready``
ModelReady         as ``/v2/models/{name}/ready``; NOT_FOUND for another model
ServerMetadata     as ``/v2``
ModelMetadata      as ``/v2/models/{name}``
ModelConfig        as ``/v2/models/{name}/config`` (Triton's model configuration)
ModelInfer         the same ``Pipeline`` as ``/v2/models/{name}/infer`` (``grpc_protocol.py``)
ModelStatistics    as ``/v2/models[/{name}[/versions/{v}]]/stats`` (Triton's statistics extension)
RepositoryIndex    as ``/v2/repository/index``
RepositoryModel…   Load and Unload refused as over HTTP (PERMISSION_DENIED: the operator owns models)
=================  ============================================================================

The other methods of Triton's service (streaming, shared memory, trace and log settings) answer
UNIMPLEMENTED. Every answer names the revision that answered in
its trailing metadata (``cutover-revision``); ModelInfer calls are counted with the HTTP status
they end with (``grpc_protocol.py``), in the series HTTP requests are counted in, so the rollout
analysis sees them as it sees HTTP; a request the client cancels is not counted, as over HTTP.
An error is the status code ``grpc_protocol.status_code`` gives for its HTTP status, with its
message, and ``retry-after`` in the trailing metadata when it has one; a request that is not a
valid message is INVALID_ARGUMENT (``parsed_in_handlers``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2, service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb

from cutover.api.contract import REQUEST_ID_HEADER, REVISION_HEADER

from .errors import InferenceError, ServingError
from .grpc_protocol import (
    decode_infer_request,
    decode_serialized_request,
    encode_infer_response,
    slow_to_decode,
    status_code,
)
from .grpc_threads import poller_yields
from .pipeline import Tensors
from .protocol import InferRequest
from .tracing import Tracing, propagated

if TYPE_CHECKING:
    from .server import ModelServer

log = logging.getLogger("cutover.serving")
Context = grpc.aio.ServicerContext[Any, Any]
Metadata = tuple[tuple[str, str], ...]
SPAN_ATTRIBUTES = {"rpc.system": "grpc"}
"""The attributes of a traced call's SERVER span."""


async def abort(
    context: Context, status: int, message: str, retry_after: int | str | None = None, metadata: Metadata = ()
) -> NoReturn:
    """End the call with the gRPC status of HTTP ``status``, ``message``, and the trailing
    ``metadata`` (plus ``retry-after`` when given)."""
    retry = (("retry-after", str(retry_after)),) if retry_after is not None else ()
    await context.abort(status_code(status), message, (*metadata, *retry))


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]  # tritonclient is untyped
    """``GRPCInferenceService`` over one ``ModelServer``'s model (see the module docstring)."""

    TAKES_SERIALIZED = frozenset({"ModelInfer"})
    """Methods ``parsed_in_handlers`` also hands the request's bytes as they came: a large request
    goes to a decoding worker as those bytes, not serialized again on the event loop (measured
    here for a 51 MB request: 54 ms to size it and 53 ms to serialize it, against 25 ms to parse)."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.revision = ((REVISION_HEADER.lower(), server.config.revision),)

    async def _call(self, context: Context, status: int, message: str, retry_after: int | None = None) -> NoReturn:
        await abort(context, status, message, retry_after, self.revision)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        context.set_trailing_metadata(self.revision)
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        context.set_trailing_metadata(self.revision)
        return pb.ServerReadyResponse(ready=await self.server.readiness() is None)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        try:
            self.server.serves(request.name, request.version)
        except ServingError as error:
            await self._call(context, error.status, str(error))
        context.set_trailing_metadata(self.revision)
        return pb.ModelReadyResponse(ready=self.server.model_readiness() is None)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        context.set_trailing_metadata(self.revision)
        return json_format.ParseDict(self.server.description(), pb.ServerMetadataResponse())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        try:
            self.server.serves(request.name, request.version)
            metadata = self.server.metadata()
        except ServingError as error:
            await self._call(context, error.status, str(error), error.retry_after)
        context.set_trailing_metadata(self.revision)
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        try:
            self.server.serves(request.name, request.version)
            config = self.server.triton_config()
        except ServingError as error:
            await self._call(context, error.status, str(error), error.retry_after)
        context.set_trailing_metadata(self.revision)
        parsed = json_format.ParseDict(config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
        return pb.ModelConfigResponse(config=parsed)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context, serialized: bytes
    ) -> pb.ModelInferResponse:
        """One inference call: ``request`` as parsed from ``serialized``, the bytes that came
        (``TAKES_SERIALIZED``)."""
        started = time.perf_counter()
        server = self.server
        config = server.config

        async def read() -> InferRequest:
            # Decoding holds the GIL: 50 MB of typed values decoded on the event loop would
            # stall /v2/health/live past the kubelet's probe timeout, as JSON did over HTTP.
            if slow_to_decode(request) and len(serialized) >= server.offload.threshold:
                return await server.offload.run(len(serialized), decode_serialized_request, serialized)
            return decode_infer_request(request)  # the message parsed already, not the bytes again

        async def encode(
            decoded: InferRequest, outputs: Tensors, parameters: dict[str, Any] | None
        ) -> pb.ModelInferResponse:
            return encode_infer_response(config.name, config.version, decoded, outputs, parameters)

        error: ServingError | None = None
        try:
            server.serves(request.model_name, request.model_version)
            request_id = dict(context.invocation_metadata() or ()).get(REQUEST_ID_HEADER.lower())
            answer = await server.loaded().answer(read, encode, str(request_id) if request_id else None)
        except ServingError as refused:
            error = refused
        except Exception as failed:
            log.exception("gRPC ModelInfer failed")
            error = InferenceError(f"internal error: {failed}")
        # Counted before the status goes out (abort sends it at once): a client that reads the
        # metrics after its answer finds it counted.
        server.metrics.request(200 if error is None else error.status, time.perf_counter() - started)
        if error is not None:
            await self._call(context, error.status, str(error), error.retry_after)
        context.set_trailing_metadata(self.revision)
        return answer

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Context) -> pb.ModelStatisticsResponse:
        if request.name:
            try:
                self.server.serves(request.name, request.version)
            except ServingError as error:
                await self._call(context, error.status, str(error))
        context.set_trailing_metadata(self.revision)
        return json_format.ParseDict(self.server.statistics(), pb.ModelStatisticsResponse())

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Context) -> pb.RepositoryIndexResponse:
        context.set_trailing_metadata(self.revision)
        index = self.server.index(ready_only=request.ready)
        return json_format.ParseDict({"models": index}, pb.RepositoryIndexResponse())

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        await self._refuse_control(context, "load", request.model_name)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await self._refuse_control(context, "unload", request.model_name)

    async def _refuse_control(self, context: Context, action: str, model: str) -> NoReturn:
        error = self.server.control_refused(action, model)
        await self._call(context, error.status, str(error))


def parsed_in_handlers(
    service: service_pb2_grpc.GRPCInferenceServiceServicer, tracing: Tracing | None = None
) -> grpc.GenericRpcHandler:
    """The unary methods of ``GRPCInferenceService`` (from its descriptor) calling ``service``, each
    request parsed in the handler: bytes that are not the method's message (malformed, or a
    string field that is not UTF-8) are INVALID_ARGUMENT with the reason, where grpcio's own
    parsing answers UNKNOWN, which reads as a server failure. The streaming method is left out:
    UNIMPLEMENTED, as for any method not served. A method named in the servicer's
    ``TAKES_SERIALIZED`` is also handed the request's bytes. With ``tracing`` on, each call is a SERVER span
    (``inference.GRPCInferenceService/ModelInfer``), a child of the ``traceparent`` in its metadata,
    and the span's ``traceparent`` goes back in the initial metadata."""
    tracing = tracing or Tracing()
    takes_serialized: frozenset[str] = getattr(service, "TAKES_SERIALIZED", frozenset())
    described = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in described.methods:
        if method.client_streaming or method.server_streaming:
            continue
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        behaviour = getattr(service, method.name)

        async def call(
            data: bytes,
            context: Context,
            behaviour: Any = behaviour,
            request_type: Any = request_type,
            name: str = f"{described.full_name}/{method.name}",
            awaited: bool = inspect.iscoroutinefunction(behaviour),
            with_bytes: bool = method.name in takes_serialized,
        ) -> Any:
            metadata = tracing.enabled and {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            with tracing.serving(name, metadata or {}, SPAN_ATTRIBUTES) as span:
                if span is not None:  # the call's traceparent, as an HTTP answer carries it
                    await context.send_initial_metadata(tuple(propagated().items()))
                try:
                    request = request_type.FromString(data)
                except DecodeError as error:
                    message = f"the request is not a valid {request_type.DESCRIPTOR.full_name}: {error}"
                    await abort(context, 400, message)
                # The servicer's defaults for methods not served are not async.
                answer = behaviour(request, context, data) if with_bytes else behaviour(request, context)
                return await answer if awaited else answer

        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            call, response_serializer=response_type.SerializeToString
        )
    return grpc.method_handlers_generic_handler(described.full_name, handlers)


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """grpc's channel arguments for a server that takes requests of up to ``max_message_bytes``
    (a larger one is RESOURCE_EXHAUSTED) and sends answers of any size."""
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", -1)]


@asynccontextmanager
async def listening(
    service: service_pb2_grpc.GRPCInferenceServiceServicer,
    host: str,
    port: int | None,
    *,
    max_message_bytes: int,
    shutdown_grace: float,
    tracing: Tracing | None = None,
) -> AsyncIterator[int | None]:
    """Serve ``service`` (this module's, or the gateway's) over gRPC on ``host:port`` (0 picks a
    free port, logged; None: no gRPC) until the block ends, yielding the port; then stop taking
    calls and give those in flight ``shutdown_grace`` seconds. grpc.aio's poller thread yields to
    the event loop (``grpc_threads.poller_yields``). Requests up to
    ``max_message_bytes`` (a larger one is RESOURCE_EXHAUSTED), answers of any size; each call
    traced with ``tracing`` when it is on."""
    if port is None:
        yield None
        return
    grpc_server = grpc.aio.server(options=server_options(max_message_bytes))
    grpc_server.add_generic_rpc_handlers((parsed_in_handlers(service, tracing),))
    bound = grpc_server.add_insecure_port(f"{host}:{port}")
    await grpc_server.start()
    poller_yields()
    log.info("gRPC listening on %s:%d", host, bound)
    try:
        yield bound
    finally:
        await grpc_server.stop(shutdown_grace)
