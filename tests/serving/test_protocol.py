"""The Open Inference Protocol codec: JSON and binary tensors, and the errors for bad bodies."""

from __future__ import annotations

import json
import struct
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cutover.serving.errors import InvalidInput as ProtocolError
from cutover.serving.pipeline import new_request_id
from cutover.serving.protocol import (
    DATATYPES,
    InferRequest,
    RawInput,
    RequestedOutput,
    assemble,
    datatype_of,
    decode_request,
    decode_response,
    encode_response,
    encode_tensors,
    tensor_bytes,
)

NUMERIC = [name for name in DATATYPES if name != "BYTES"]


def _binary_request(arrays: dict[str, np.ndarray]) -> tuple[bytes, str]:
    tensors, buffers = encode_tensors(arrays, dict.fromkeys(arrays, True))
    body, length = assemble({"inputs": tensors}, buffers)
    assert length is not None
    return body, str(length)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(NUMERIC).flatmap(
        lambda name: hnp.arrays(DATATYPES[name], hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    )
)
def test_every_numeric_datatype_round_trips_through_binary_and_json(array: np.ndarray) -> None:
    body, length = _binary_request({"x": array})
    decoded = decode_request(body, length).inputs["x"]
    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype == array.dtype
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return  # JSON has no NaN or Infinity; the binary form above carries them
    tensors, _ = encode_tensors({"x": array})
    decoded = decode_request(json.dumps({"inputs": tensors}).encode()).inputs["x"]
    np.testing.assert_array_equal(decoded, array)


def test_bytes_tensors_round_trip_with_length_prefixes() -> None:
    words = np.array([b"", b"caf\xc3\xa9", b"x" * 300], dtype=object)
    body, length = _binary_request({"text": words})
    assert struct.pack("<I", 300) in body
    np.testing.assert_array_equal(decode_request(body, length).inputs["text"], words)


def test_json_data_may_be_nested_or_flat() -> None:
    nested = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}
    flat = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    a = decode_request(json.dumps(nested).encode()).inputs["x"]
    b = decode_request(json.dumps(flat).encode()).inputs["x"]
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32


def test_raw_binary_request_is_batch_one_with_binary_outputs() -> None:
    array = np.arange(4, dtype=np.float32)
    request = decode_request(array.tobytes(), "0", RawInput("input", "FP32", (-1, 4)))
    assert request.inputs["input"].shape == (1, 4)
    assert request.binary_output


def test_response_mixes_json_and_binary_outputs_as_requested() -> None:
    outputs = {"a": np.array([[0.25, 0.75]], dtype=np.float32), "b": np.array([3], dtype=np.int64)}
    request = InferRequest(inputs={}, id="r-1", outputs=[RequestedOutput("a", True), RequestedOutput("b")])
    body, length = encode_response("m", "1", request, outputs)
    assert length is not None
    header, arrays = decode_response(body, str(length))
    assert header["id"] == "r-1"
    assert "data" in header["outputs"][1] and "parameters" in header["outputs"][0]
    np.testing.assert_array_equal(arrays["a"], outputs["a"])
    np.testing.assert_array_equal(arrays["b"], outputs["b"])


def _error(body: bytes, length: str | None = None, raw: RawInput | None = None) -> str:
    with pytest.raises(ProtocolError) as caught:
        decode_request(body, length, raw)
    assert caught.value.status == 400
    return str(caught.value)


def _one(**tensor: object) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], **tensor}]}).encode()


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{", None, "malformed JSON"),
        (b'{"a": "\xc3\x28"}', None, "not UTF-8"),
        (b"[]", None, "JSON object"),
        (b"{}", None, "non-empty 'inputs'"),
        (_one(data=[1, 2, 3]), None, "needs 2 values, got 3"),
        (_one(data=["a", "b"]), None, "does not fit datatype FP32"),
        (_one(data=[True, False]), None, "does not fit datatype FP32"),
        (_one(data=[[1], [2, 3]]), None, "rectangular"),
        (_one(), None, "neither data"),
        (_one(data=[1, 2], shape=[-2]), None, "non-negative"),
        (_one(data=[1, 2], datatype="BF16"), None, "not supported"),
        (_one(data=[1, 2], datatype="INT8", shape=[2]).replace(b"[1, 2]", b"[1, 300]"), None, "out of the range"),
        (_one(data=[1.5, 2], datatype="INT32"), None, "does not fit datatype INT32"),
        (_one(parameters={"binary_data_size": 8}) + b"\x00" * 4, "__header__", "truncated"),
        (_one(parameters={"binary_data_size": 4}) + b"\x00" * 4, "__header__", "needs 8 bytes, got 4"),
        (_one(parameters={"binary_data_size": 8}) + b"\x00" * 12, "__header__", "4 bytes follow"),
        (_one(data=[1, 2]), "9999", "the body has"),
        (_one(data=[1, 2]), "abc", "must be an integer"),
        (b"\x00" * 3, "0", "needs a model with exactly one input"),
        (
            json.dumps({**json.loads(_one(data=[1, 2])), "outputs": [{"name": "y"}, {"name": "y"}]}).encode(),
            None,
            "output 'y' is asked for twice",
        ),
    ],
)
def test_bad_bodies_are_400_with_the_reason(body: bytes, length: str | None, message: str) -> None:
    if length == "__header__":
        length = str(body.index(b"}]}") + 3)
    assert message in _error(body, length)


def test_raw_bytes_that_do_not_fill_the_shape_are_refused() -> None:
    assert "do not fit" in _error(b"\x00" * 6, "0", RawInput("input", "FP32", (-1, 4)))


def test_truncated_bytes_element_is_refused() -> None:
    body = json.dumps(
        {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]}
    ).encode()
    length = str(len(body))
    assert "runs past" in _error(body + struct.pack("<I", 10) + b"ab", length)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=">f4").reshape(2, 3),
        np.arange(6, dtype="<i8").reshape(2, 3).T,
        np.arange(6, dtype=">u2").reshape(3, 2)[::2],
        np.array([True, False]),
    ],
    ids=["big-endian", "transposed", "big-endian strided", "bool"],
)
def test_output_bytes_are_little_endian_in_c_order_whatever_the_layout(array: np.ndarray) -> None:
    """A model may answer in any byte order and layout; the binary form is always little-endian
    in C order, under the datatype of the values (the native-order shortcut must not take these)."""
    little = array.astype(array.dtype.newbyteorder("<"))
    assert tensor_bytes(array) == np.ascontiguousarray(little).tobytes()
    assert datatype_of(array) == datatype_of(little)


def test_request_ids_made_here_are_uuid4_hex() -> None:
    """The id of an answer to a request that named none: a fresh version-4 UUID's 32 hex digits."""
    made = [new_request_id() for _ in range(1000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.hex, parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)
