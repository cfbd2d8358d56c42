"""The gateway's Open Inference Protocol over gRPC (``cutover gateway --grpc-port``): the same
``inference.GRPCInferenceService`` that ``cutover serve`` answers (``serving/grpc_server.py``),
so ``tritonclient.grpc`` works unchanged through the gateway.

Each model call takes the HTTP request path: its gRPC metadata stands for the HTTP headers
(case-insensitively), so the API key (``authorization: Bearer`` or ``x-api-key``), the rate
limit, the sticky A/B assignment (a header, a hashed key, or the ``cookie`` metadata; a new
assignment comes back as ``set-cookie``) and ``x-request-id`` are read as they are for HTTP; the
call is routed by the same traffic table (weights, a named version), mirrored to shadow
revisions and compared there, retried and broken by circuit as HTTP is (``Gateway.forward``).
The revision is called over its HTTP port with the binary tensor extension: a gRPC request is
decoded and checked here (``serving/grpc_protocol.py``; bad input is INVALID_ARGUMENT before
anything is routed) and goes on as the HTTP request with the same tensors, so every revision,
shadow comparison and series sees one protocol. The revision's answer comes back as the gRPC
message; its HTTP status as the gRPC status code Triton uses (``grpc_protocol.status_code``),
with its message, ``retry-after`` and ``cutover-revision`` in the trailing metadata.

ServerLive and ServerReady answer for the gateway itself (ready once its watched lists arrived,
until draining); ModelReady, ModelMetadata, ModelConfig and ModelStatistics ask a revision of
the model; RepositoryIndex lists what the caller's key may call, as over HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any, NoReturn
from urllib.parse import quote

from google.protobuf import json_format
from multidict import CIMultiDict
from tritonclient.grpc import model_config_pb2, service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb

from cutover.api.contract import REQUEST_ID_HEADER, REVISION_HEADER

from ..errors import ServingError
from ..grpc_protocol import decode_infer_request, infer_response
from ..grpc_server import Context, Metadata, abort
from ..protocol import HEADER_LENGTH, RequestedOutput, assemble, decode_response, encode_tensors
from ..tracing import TRACE_HEADERS
from .app import SERVER_NAME, Gateway
from .keys import Denied, retry_after_header
from .proxy import Answer, Outgoing
from .routing import for_version, unknown_version

log = logging.getLogger("cutover.gateway")


class GatewayInferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]  # tritonclient is untyped
    """``GRPCInferenceService`` in front of every model the gateway routes (module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self.gateway.draining and not self.gateway.unlisted)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        answer = await self._forward(context, request.name, request.version, "GET", "/ready")
        if answer.status not in (200, 503):
            await _refuse(context, answer)
        return pb.ModelReadyResponse(ready=answer.status == 200)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        answer = await self._forward(context, request.name, request.version, "GET", "")
        return json_format.ParseDict(
            await _json(context, answer), pb.ModelMetadataResponse(), ignore_unknown_fields=True
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        answer = await self._forward(context, request.name, request.version, "GET", "/config")
        config = model_config_pb2.ModelConfig()
        return pb.ModelConfigResponse(
            config=json_format.ParseDict(await _json(context, answer), config, ignore_unknown_fields=True)
        )

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Context) -> pb.ModelStatisticsResponse:
        """The statistics of the revision the call is routed to (a model name is needed: the
        gateway routes by it)."""
        answer = await self._forward(context, request.name, request.version, "GET", "/stats")
        statistics = pb.ModelStatisticsResponse()
        return json_format.ParseDict(await _json(context, answer), statistics, ignore_unknown_fields=True)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Context) -> pb.RepositoryIndexResponse:
        """The models the gateway routes that the caller's key may call (``Gateway.index``)."""
        metadata = CIMultiDict(_text_metadata(context))
        try:
            key = self.gateway.authorize(metadata, None, None)
        except Denied as denied:
            await _denied(context, denied)
        index = self.gateway.index(key, ready_only=request.ready)
        return json_format.ParseDict({"models": index}, pb.RepositoryIndexResponse())

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        try:
            decoded = decode_infer_request(request)
        except ServingError as error:
            await abort(context, error.status, str(error))
        tensors, buffers = encode_tensors(decoded.inputs, dict.fromkeys(decoded.inputs, True))
        header: dict[str, Any] = {"inputs": tensors, "parameters": {**decoded.parameters, "binary_data_output": True}}
        if decoded.id is not None:
            header["id"] = decoded.id
        if decoded.outputs is not None:
            header["outputs"] = [_requested(output) for output in decoded.outputs]
        body, length = assemble(header, buffers)
        answer = await self._forward(
            context, request.model_name, request.model_version, "POST", "/infer", body, str(length or len(body))
        )
        if answer.status != 200:
            await _refuse(context, answer)
        try:
            head, outputs = decode_response(answer.body, answer.headers.get(HEADER_LENGTH))
        except (ServingError, ValueError, KeyError, TypeError) as error:
            await abort(
                context, 502, f"revision answered what the protocol cannot carry: {error}", None, _names(answer)
            )
        return infer_response(
            str(head.get("model_name", request.model_name)),
            str(head.get("model_version", "")),
            head.get("id") or decoded.id,
            outputs,
            head.get("parameters"),
        )

    async def _forward(
        self,
        context: Context,
        name: str,
        version: str,
        method: str,
        suffix: str,
        body: bytes = b"",
        header_length: str | None = None,
    ) -> Answer:
        """The answer of a revision of model ``name`` (of ``version`` when not empty) to
        ``method`` on its Open Inference Protocol path plus ``suffix``, after the gateway's key
        check and routing; the call ends here with the gateway's own refusal (unknown model or
        version, a key refused)."""
        gateway = self.gateway
        metadata = CIMultiDict(_text_metadata(context))
        route = gateway.routes.get(name)
        try:
            gateway.authorize(metadata, route, name)
        except Denied as denied:
            await _denied(context, denied)
        if route is None:
            await abort(context, 404, f"unknown model {name!r}")
        path = f"/v2/models/{quote(name, safe='')}"
        if version:
            pinned = for_version(route, version)
            if pinned is None:
                await abort(context, 404, unknown_version(route, name, version))
            route, path = pinned, f"{path}/versions/{quote(version, safe='')}"
        headers = {HEADER_LENGTH: header_length} if header_length is not None else {}
        for name in (REQUEST_ID_HEADER, *TRACE_HEADERS):  # as HTTP passes them on
            if (value := metadata.get(name)) is not None:
                headers[name] = value
        sent = Outgoing(method, path + suffix, body, headers, idempotent=True)
        answer = await gateway.forward(route, sent, metadata, _cookies(metadata.getall("cookie", [])))
        context.set_trailing_metadata(_names(answer))
        return answer


def _text_metadata(context: Context) -> list[tuple[str, str]]:
    """A call's metadata that stands for HTTP headers: every entry but binary (``-bin``) ones."""
    return [(key, value) for key, value in context.invocation_metadata() or () if isinstance(value, str)]


async def _denied(context: Context, denied: Denied) -> NoReturn:
    """End the call with the gateway's refusal of its key: 401, 403 or 429 (with ``retry-after``)."""
    retry_after = retry_after_header(denied.retry_after) if denied.retry_after else None
    await abort(context, denied.status, str(denied), retry_after)


def _requested(output: RequestedOutput) -> dict[str, Any]:
    """A requested output as the HTTP request names it, with its classification if asked."""
    if output.classification is None:
        return {"name": output.name}
    return {"name": output.name, "parameters": {"classification": output.classification}}


def _cookies(values: list[str]) -> dict[str, str]:
    """The cookies of ``cookie`` metadata entries; an entry that does not parse is skipped."""
    cookies: dict[str, str] = {}
    for value in values:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value)
        except CookieError:
            continue
        cookies.update({name: morsel.value for name, morsel in jar.items()})
    return cookies


def _names(answer: Answer) -> Metadata:
    """The trailing metadata of an answer: the revision that gave it, a new sticky cookie."""
    names = ((REVISION_HEADER, "cutover-revision"), ("Set-Cookie", "set-cookie"))
    return tuple((key, value) for header, key in names if (value := answer.headers.get(header)) is not None)


async def _refuse(context: Context, answer: Answer) -> NoReturn:
    """End the call with a revision's (or the gateway's) error answer."""
    try:
        message = str(json.loads(answer.body)["error"])
    except (ValueError, KeyError, TypeError):
        message = answer.body.decode(errors="replace")[:1000] or f"HTTP {answer.status}"
    await abort(context, answer.status, message, answer.headers.get("Retry-After"), _names(answer))


async def _json(context: Context, answer: Answer) -> Mapping[str, Any]:
    """A revision's JSON answer; the call ends with its error when it is not a 200 with a JSON object."""
    if answer.status != 200:
        await _refuse(context, answer)
    try:
        value = json.loads(answer.body)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        await abort(context, 502, "revision answered something other than a JSON object", None, _names(answer))
    return value
