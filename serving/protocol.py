"""Open Inference Protocol v2 tensors on the wire: JSON and the binary tensor extension.

Decoding turns one request body into numpy arrays, and encoding turns arrays into one response
body, so the server, the fallback chain and the gateway's shadow comparison share one codec.

The binary extension (what ``tritonclient.http`` sends by default): the body is a JSON header
followed by raw little-endian tensor bytes in the order of the JSON tensors; the header's length
is in ``Inference-Header-Content-Length``; each binary tensor carries
``parameters.binary_data_size``; a BYTES element is a 4-byte little-endian length and its bytes.
A header length of 0 is the raw form: the whole body is the single input of a batch-1 request.
Content-Type is never consulted (tritonclient does not set it).

A body the codec cannot accept raises ``InvalidInput`` (400) saying which tensor and why; an
array numpy holds but the protocol has no datatype for raises ``InferenceError`` (500).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InferenceError, InvalidInput
from .parameters import check_parameters, class_count, flag

HEADER_LENGTH = "Inference-Header-Content-Length"

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
"""Protocol datatypes and their numpy types. BF16 has no numpy type and is refused with a 400."""

_BY_NUMPY = {dtype.newbyteorder("="): name for name, dtype in DATATYPES.items() if name != "BYTES"}
_LITTLE_ENDIAN = ("<", "|", "=") if sys.byteorder == "little" else ("<", "|")
"""numpy byte orders whose bytes are already the protocol's (little-endian, or single bytes)."""
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
"""Which kinds of JSON number each numpy kind accepts: no bools as numbers, no floats as ints."""


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None
    """None: the request-wide default (``binary_data_output``)."""
    classification: int | None = None
    """Triton's classification extension: answer the top this-many classes of each row as BYTES
    "value:index[:label]" (``serving/classification.py``); None: the output as it is."""


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    """None: every output the model has."""
    binary_output: bool = False
    """The request-wide default for outputs that do not say."""

    def __post_init__(self) -> None:
        """Raises ``InvalidInput`` (400) when an output is asked for twice, as Triton refuses
        it: which of the two entries' binary and classification choices holds is not said."""
        if self.outputs and len({output.name for output in self.outputs}) != len(self.outputs):
            names = [output.name for output in self.outputs]
            twice = next(name for name in names if names.count(name) > 1)
            raise InvalidInput(f"output {twice!r} is asked for twice")


@dataclass(frozen=True)
class RawInput:
    """What a header-less (raw binary) request's single input is: name, datatype and shape."""

    name: str
    datatype: str
    shape: Sequence[int]


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of ``array``. Raises ``InferenceError`` (500) for a numpy type the
    protocol has none for."""
    name = _BY_NUMPY.get(array.dtype)  # native byte order: found without making a dtype
    if name is not None:
        return name
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_NUMPY[array.dtype.newbyteorder("=")]
    except KeyError:
        raise InferenceError(f"numpy type {array.dtype} has no protocol datatype") from None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except UnicodeDecodeError:
        raise InvalidInput("the request header is not UTF-8 JSON") from None
    except ValueError as error:
        raise InvalidInput(f"malformed JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidInput("the request must be a JSON object")
    return value


def _shape(tensor: Mapping[str, Any], where: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers")
    if len(shape) > 16 or math.prod(shape) > 2**31:
        raise InvalidInput(f"{where}: shape {shape} is too large")
    return tuple(shape)


def _dtype(tensor: Mapping[str, Any], where: str) -> tuple[str, np.dtype[Any]]:
    name = tensor.get("datatype")
    if name not in DATATYPES:
        known = ", ".join(DATATYPES)
        raise InvalidInput(f"{where}: datatype {name!r} is not supported (one of {known})")
    return name, DATATYPES[name]


def _split_bytes(buffer: bytes | memoryview, count: int, where: str) -> np.ndarray:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes."""
    view = memoryview(buffer)
    items: list[bytes] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(view):
            raise InvalidInput(f"{where}: BYTES data ends inside an element length")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(f"{where}: BYTES element of {length} bytes runs past the data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise InvalidInput(f"{where}: {len(view) - offset} bytes left over after {count} BYTES elements")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def _from_binary(
    buffer: bytes | memoryview, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], where: str
) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _split_bytes(buffer, count, where).reshape(shape)
    if len(buffer) != count * dtype.itemsize:
        raise InvalidInput(
            f"{where}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, got {len(buffer)}"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _from_json(data: Any, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], where: str) -> np.ndarray:
    count = math.prod(shape)
    array: np.ndarray | None
    if datatype == "BYTES":
        flat = _flatten(data, where)
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(f"{where}: BYTES data must be strings")
        array = np.empty(len(flat), dtype=object)
        try:
            array[:] = [v.encode() for v in flat]
        except UnicodeEncodeError as error:  # a lone surrogate, which JSON's \ud800 escapes can spell
            raise InvalidInput(f"{where}: BYTES data is not Unicode text ({error.reason})") from None
    else:
        try:
            array = np.asarray(data)
        except ValueError:
            raise InvalidInput(f"{where}: data is not a rectangular array") from None
        if array.size and array.dtype.kind not in _JSON_KINDS[dtype.kind]:
            array = _wide_integers(data, array, dtype, where) if dtype.kind in "iu" else None
            if array is None:
                raise InvalidInput(f"{where}: data of kind {array_kind(data)} does not fit datatype {datatype}")
        if array.dtype.kind in "iu" and dtype.kind in "iu" and array.size:
            info = np.iinfo(dtype)
            if array.min() < info.min or array.max() > info.max:
                raise InvalidInput(f"{where}: values out of the range of {datatype}")
        array = array.astype(dtype, copy=False)
    if array.size != count:
        raise InvalidInput(f"{where}: shape {list(shape)} needs {count} values, got {array.size}")
    return array.reshape(shape)


def array_kind(data: Any) -> str:
    try:
        return str(np.asarray(data).dtype)
    except ValueError:
        return "mixed"


def _wide_integers(data: Any, array: np.ndarray, dtype: np.dtype[Any], where: str) -> np.ndarray | None:
    """Integers numpy could not infer as one integer type (UINT64 above the INT64 range become
    float64): accepted when every value is a JSON integer that fits the datatype."""
    flat = _flatten(data, where)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return None
    info = np.iinfo(dtype)
    if any(v < info.min or v > info.max for v in flat):
        raise InvalidInput(f"{where}: values out of the range of {dtype.name.upper()}")
    return np.array(flat, dtype=dtype).reshape(array.shape)


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 16:
                    raise InvalidInput(f"{where}: data is nested too deeply")
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _binary_size(parameters: Any, where: str) -> int | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer")
    return size


def decode_tensor(
    name: str, datatype: str, shape: Sequence[int], *, raw: bytes | None = None, values: Sequence[Any] = ()
) -> np.ndarray:
    """One input tensor of another transport (the gRPC form, ``serving/grpc_protocol.py``) with
    the checks of a JSON or binary one: its ``raw`` bytes in the binary tensor form when given,
    else its flat ``values`` (numbers, booleans, or ``bytes`` for BYTES). Raises ``InvalidInput``
    (400) for a datatype, shape or data that does not fit."""
    where = f"input {name!r}"
    dtype, dims = DATATYPES.get(datatype), tuple(shape)
    if dtype is None or (dims and min(dims) < 0) or len(dims) > 16 or math.prod(dims) > 2**31:
        # refused: by the checks of a JSON tensor, which say why (``shape`` holds integers)
        datatype, dtype = _dtype({"datatype": datatype}, where)
        dims = _shape({"shape": list(dims)}, where)
    if raw is not None:
        return _from_binary(raw, datatype, dtype, dims, where)
    if datatype != "BYTES":
        return _from_json(list(values), datatype, dtype, dims, where)
    if len(values) != math.prod(dims):
        raise InvalidInput(f"{where}: shape {list(dims)} needs {math.prod(dims)} values, got {len(values)}")
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array.reshape(dims)


def decode_request(body: bytes, header_length: str | None = None, raw_input: RawInput | None = None) -> InferRequest:
    """One request body, with the value of ``Inference-Header-Content-Length`` if sent."""
    if header_length is None:
        split = len(body)
    else:
        try:
            split = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= split <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH} is {split} but the body has {len(body)} bytes")
    if split == 0:
        return _decode_raw(body, raw_input)
    header = _json_object(body[:split])
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    binary = memoryview(body)[split:]
    offset = 0
    arrays: dict[str, np.ndarray] = {}
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInput(f"inputs[{position}] must be an object with a name")
        name = tensor["name"]
        where = f"input {name!r}"
        if name in arrays:
            raise InvalidInput(f"{where} is given twice")
        datatype, dtype = _dtype(tensor, where)
        shape = _shape(tensor, where)
        check_parameters(tensor.get("parameters"), "input", where)
        size = _binary_size(tensor.get("parameters"), where)
        if size is not None:
            if offset + size > len(binary):
                raise InvalidInput(f"{where}: binary data is truncated ({len(binary) - offset} of {size} bytes)")
            arrays[name] = _from_binary(binary[offset : offset + size], datatype, dtype, shape, where)
            offset += size
        elif "data" in tensor:
            arrays[name] = _from_json(tensor["data"], datatype, dtype, shape, where)
        else:
            raise InvalidInput(f"{where} has neither data nor parameters.binary_data_size")
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes follow the binary inputs")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("id must be a string")
    honoured = check_parameters(header.get("parameters"), "request", "the request")
    return InferRequest(
        inputs=arrays,
        id=request_id,
        parameters=honoured,
        outputs=_requested_outputs(header.get("outputs")),
        binary_output=flag(honoured, "binary_data_output", "the request") is True,
    )


def _requested_outputs(outputs: Any) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InvalidInput("outputs must be a list")
    requested: list[RequestedOutput] = []
    for position, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInput(f"outputs[{position}] must be an object with a name")
        where = f"output {output['name']!r}"
        asked = check_parameters(output.get("parameters"), "output", where)
        requested.append(RequestedOutput(output["name"], flag(asked, "binary_data", where), class_count(asked, where)))
    return requested


def decode_index_request(body: bytes) -> bool:
    """Whether a repository index request (Triton's model repository extension) asks for ready
    models only: its body is empty or ``{"ready": true|false}``. Raises ``InvalidInput`` for
    any other body."""
    try:
        asked = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        asked = None
    ready = asked.get("ready", False) if isinstance(asked, dict) and set(asked) <= {"ready"} else None
    if not isinstance(ready, bool):
        raise InvalidInput('the index request is an empty body or {"ready": true} or {"ready": false}')
    return ready


def _decode_raw(body: bytes, raw_input: RawInput | None) -> InferRequest:
    """The header-less form: the body is the one input of a batch-1 request; outputs in binary."""
    if raw_input is None:
        raise InvalidInput(f"a raw binary request ({HEADER_LENGTH}: 0) needs a model with exactly one input")
    dtype = DATATYPES.get(raw_input.datatype)
    if dtype is None or raw_input.datatype == "BYTES":
        raise InvalidInput(f"a raw binary request cannot carry {raw_input.datatype}")
    shape = [1 if i == 0 and d == -1 else d for i, d in enumerate(raw_input.shape)]
    known = math.prod(d for d in shape if d != -1) * dtype.itemsize
    unknown = shape.count(-1)
    if unknown > 1 or known == 0 or len(body) % known:
        raise InvalidInput(f"{len(body)} raw bytes do not fit input {raw_input.name!r} of shape {shape}")
    if unknown:
        shape[shape.index(-1)] = len(body) // known
    elif len(body) != known:
        raise InvalidInput(f"input {raw_input.name!r} of shape {shape} needs {known} bytes, got {len(body)}")
    array = np.frombuffer(body, dtype=dtype).reshape(shape)
    return InferRequest(inputs={raw_input.name: array}, binary_output=True)


def tensor_bytes(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OSU":
        parts = []
        for item in array.ravel():
            data = item.encode() if isinstance(item, str) else bytes(item)
            parts += [struct.pack("<I", len(data)), data]
        return b"".join(parts)
    if array.dtype.byteorder in _LITTLE_ENDIAN:
        return array.tobytes()  # C order, whatever the array's layout
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _to_json(array: np.ndarray) -> list[Any]:
    if array.dtype.kind in "OSU":
        return [item.decode(errors="replace") if isinstance(item, bytes) else str(item) for item in array.ravel()]
    values: list[Any] = array.ravel().tolist()
    if array.dtype.kind == "f" and not all(map(math.isfinite, values)):
        # JSON has no NaN or Infinity; the binary form carries them exactly.
        values = [v if math.isfinite(v) else None for v in values]
    return values


def encode_tensors(
    arrays: Mapping[str, np.ndarray], binary: Mapping[str, bool] | None = None
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Tensor objects for a request's inputs or a response's outputs, and the binary buffers
    that follow the JSON header in their order."""
    tensors: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for name, array in arrays.items():
        tensor: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if binary and binary.get(name):
            data = tensor_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(data)}
            buffers.append(data)
        else:
            tensor["data"] = _to_json(array)
        tensors.append(tensor)
    return tensors, buffers


def assemble(header: Mapping[str, Any], buffers: Sequence[bytes]) -> tuple[bytes, int | None]:
    """A body and the header length to send (None when there is no binary part)."""
    text = json.dumps(header, separators=(",", ":")).encode()
    if not buffers:
        return text, None
    return b"".join([text, *buffers]), len(text)


def select_outputs(
    outputs: Mapping[str, np.ndarray], request: InferRequest
) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    """The outputs a request asked for, and which of them go binary."""
    if request.outputs is None:
        return dict(outputs), dict.fromkeys(outputs, request.binary_output)
    chosen: dict[str, np.ndarray] = {}
    binary: dict[str, bool] = {}
    for wanted in request.outputs:
        if wanted.name not in outputs:
            raise InvalidInput(f"unknown output {wanted.name!r}; the model has {', '.join(outputs)}")
        chosen[wanted.name] = outputs[wanted.name]
        binary[wanted.name] = request.binary_output if wanted.binary is None else wanted.binary
    return chosen, binary


def encode_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    chosen, binary = select_outputs(outputs, request)
    tensors, buffers = encode_tensors(chosen, binary)
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        header["id"] = request.id
    if parameters:
        header["parameters"] = dict(parameters)
    header["outputs"] = tensors
    return assemble(header, buffers)


def decode_response(body: bytes, header_length: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A response's JSON header and its outputs as arrays (for the fallback chain and shadow
    comparison, which call other revisions)."""
    split = len(body) if header_length is None else int(header_length)
    header = _json_object(body[:split])
    binary = memoryview(body)[split:]
    offset = 0
    arrays: dict[str, np.ndarray] = {}
    for tensor in header.get("outputs") or []:
        where = f"output {tensor.get('name')!r}"
        datatype, dtype = _dtype(tensor, where)
        shape = _shape(tensor, where)
        size = _binary_size(tensor.get("parameters"), where)
        if size is not None:
            arrays[tensor["name"]] = _from_binary(binary[offset : offset + size], datatype, dtype, shape, where)
            offset += size
        else:
            data = [math.nan if v is None else v for v in tensor.get("data", [])] if dtype.kind == "f" else None
            arrays[tensor["name"]] = _from_json(
                tensor.get("data") if data is None else data, datatype, dtype, shape, where
            )
    return header, arrays
