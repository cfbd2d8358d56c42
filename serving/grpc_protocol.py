"""The Open Inference Protocol over gRPC: KServe v2's ``inference.GRPCInferenceService``, which
Triton extends, in the messages ``tritonclient[grpc]`` ships (``tritonclient.grpc.service_pb2``,
generated from Triton's ``grpc_service.proto``; its ``ModelConfig`` from ``model_config.proto``).

A ``ModelInferRequest`` becomes the same ``InferRequest`` that ``protocol.py`` builds from an HTTP
body, with the same checks (``protocol.decode_tensor``), so the pipeline cannot tell the two apart.
Inputs come one of two ways, never mixed (Triton refuses a mix too):

- raw: ``raw_input_contents`` holds every input's bytes, in the order of ``inputs``, as the binary
  tensor extension lays them out (little-endian; BYTES as a 4-byte length and the bytes of each
  element). What ``tritonclient.grpc`` sends.
- typed: each input's ``contents`` holds its values in the field its datatype names (KServe's
  table, ``TYPED_CONTENTS``); FP16 has no field and must come raw.

Outputs always go in ``raw_output_contents``, one per output in order, as Triton answers and as
``tritonclient.grpc``'s ``as_numpy`` reads first.

A request ends with an HTTP status wherever it is counted (``cutover_serving_requests_total``,
the gateway's series, the rollout analysis): a ``ServingError``'s own, 200 for an answer. The
client hears the gRPC status code ``status_code`` gives for it, the codes Triton uses for the
same failures (a 4xx is never INTERNAL or UNAVAILABLE, so no client input looks like a failing
revision on either side).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from .errors import InvalidInput
from .parameters import check_parameters, class_count
from .protocol import InferRequest, RequestedOutput, datatype_of, decode_tensor, select_outputs, tensor_bytes

TYPED_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The ``InferTensorContents`` field of each datatype's typed values (KServe's gRPC protocol)."""
_CONTENT_FIELDS = frozenset(TYPED_CONTENTS.values())

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""The gRPC status code of each HTTP status an answer can have. 422 (a SafetyPolicy refused the
request or its answer) is INVALID_ARGUMENT: the client's request, as sent, is not answered."""


def status_code(status: int) -> grpc.StatusCode:
    """The gRPC status code a client hears for an answer with HTTP status ``status``: the table
    above, else INVALID_ARGUMENT for another 4xx and INTERNAL for another 5xx."""
    return STATUS_CODES.get(status, grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL)


def parameter_value(parameter: pb.InferParameter) -> Any:
    """An ``InferParameter``'s value (bool, int, float or str); None when it holds none."""
    kind = parameter.WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameter, kind)


def set_parameter(parameter: pb.InferParameter, value: Any) -> None:
    """Store a bool, int, float or str (anything else as its ``str``) in an ``InferParameter``."""
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    else:
        parameter.string_param = str(value)


def decode_infer_request(message: pb.ModelInferRequest) -> InferRequest:
    """The request a ``ModelInferRequest`` carries (outputs to be answered in raw form). Raises
    ``InvalidInput`` (400) for inputs that do not fit their datatype and shape, raw contents
    that do not cover every input, typed values in the wrong field, or an input given twice."""
    # Repeated fields are read by index and maps only when not empty: iterating protobuf's
    # containers costs more than the rest of decoding a small request.
    inputs = message.inputs
    count = len(inputs)
    if not count:
        raise InvalidInput("the request needs at least one input")
    raw = message.raw_input_contents
    if raw and len(raw) != count:
        raise InvalidInput(
            f"raw_input_contents holds {len(raw)} tensors for {count} inputs: send every input raw or none"
        )
    arrays: dict[str, np.ndarray] = {}
    for position in range(count):
        tensor = inputs[position]
        name = tensor.name
        if name in arrays:
            raise InvalidInput(f"input {name!r} is given twice")
        if tensor.parameters:
            check_parameters(_parameters(tensor.parameters), "input", f"input {name!r}")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"input {name!r} has both contents and raw_input_contents")
            arrays[name] = decode_tensor(name, tensor.datatype, tensor.shape, raw=raw[position])
        else:
            arrays[name] = decode_tensor(name, tensor.datatype, tensor.shape, values=_typed_values(tensor))
    outputs = message.outputs
    return InferRequest(
        inputs=arrays,
        id=message.id or None,
        parameters=check_parameters(_parameters(message.parameters), "request", "the request"),
        outputs=[_requested_output(outputs[i]) for i in range(len(outputs))] or None,
        binary_output=True,
    )


def slow_to_decode(message: pb.ModelInferRequest) -> bool:
    """Whether decoding ``message`` walks its values one by one in Python: typed ``contents``
    (protobuf's repeated fields become Python numbers before numpy has them) or BYTES inputs
    (each element is cut out on its own). Raw contents of other datatypes become arrays without
    a copy, whatever their size."""
    inputs = message.inputs
    return any(not message.raw_input_contents or inputs[i].datatype == "BYTES" for i in range(len(inputs)))


def decode_serialized_request(data: bytes) -> InferRequest:
    """:func:`decode_infer_request` of a serialized ``ModelInferRequest``: what a worker process
    is handed (``serving/offload.py``), since a parsed message does not cross processes."""
    return decode_infer_request(pb.ModelInferRequest.FromString(data))


def _parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    if not parameters:
        return {}
    return {key: parameter_value(value) for key, value in parameters.items()}


def _requested_output(output: pb.ModelInferRequest.InferRequestedOutputTensor) -> RequestedOutput:
    """A requested output, with Triton's ``classification`` parameter; every other parameter
    is refused as over HTTP (``serving/parameters.py``; outputs are always raw here)."""
    where = f"output {output.name!r}"
    return RequestedOutput(
        output.name,
        classification=class_count(check_parameters(_parameters(output.parameters), "output", where), where),
    )


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor) -> Any:
    """The values of an input sent typed: the one ``contents`` field its datatype names."""
    where = f"input {tensor.name!r}"
    field = TYPED_CONTENTS.get(tensor.datatype)
    if field is None:
        if tensor.datatype == "FP16":
            raise InvalidInput(f"{where}: FP16 has no typed contents; send it in raw_input_contents")
        return ()  # an unknown datatype: decode_tensor names the ones there are
    contents = tensor.contents
    for other in _CONTENT_FIELDS - {field}:
        if len(getattr(contents, other)):
            raise InvalidInput(f"{where}: {tensor.datatype} values go in contents.{field}, not {other}")
    return getattr(contents, field)


def infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    parameters: Mapping[str, Any] | None = None,
) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with ``outputs`` in ``raw_output_contents``. Raises
    ``InferenceError`` (500) for an array the protocol has no datatype for."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id or "")
    for name, array in outputs.items():
        response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
        response.raw_output_contents.append(tensor_bytes(array))
    for key, value in (parameters or {}).items():
        set_parameter(response.parameters[key], value)
    return response


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
    parameters: Mapping[str, Any] | None = None,
) -> pb.ModelInferResponse:
    """The answer to ``request``: the outputs it asked for (all when it named none). Raises
    ``InvalidInput`` (400) for an output the model does not have."""
    chosen, _ = select_outputs(outputs, request)
    return infer_response(model_name, model_version, request.id, chosen, parameters)
