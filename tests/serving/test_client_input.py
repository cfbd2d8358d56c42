"""Client input is never a failure of the revision: every way a request could reach a 5xx (or
spoil a series the rollout analysis reads) answers a 4xx that says why, or is served, on a real
`cutover serve`. Found by tritonclient sending a BYTES element that is not UTF-8 to a model with
a string input (a 500, counted as the model failing); the rest of the kind: a JSON string that
is no Unicode text (a lone surrogate escape), NaN and infinite values reaching the confidence and
out-of-distribution histograms (one made their sums NaN for good), and random bodies and headers
against the string model, batched."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from cutover.serving import sample_models
from cutover.serving.protocol import HEADER_LENGTH

from .support import Serving
from .test_fuzz import Client, check

INFER = "/v2/models/classifier/infer"


def echo_model(path: Path) -> Path:
    """An ONNX model with a string input: ``text`` [-1] -> ``echo`` [-1] (Identity)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def strings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    workdir = tmp_path_factory.mktemp("strings")
    model = echo_model(workdir / "echo.onnx")
    serving = Serving(workdir, "--format", "onnx", "--model-uri", str(model), "--max-batch-size", "8").start()
    yield serving
    assert serving.stop() == 0


def texts(serving: Serving, *elements: bytes) -> list[bytes]:
    client = httpclient.InferenceServerClient(serving.url.removeprefix("http://"))
    try:
        tensor = httpclient.InferInput("text", [len(elements)], "BYTES")
        tensor.set_data_from_numpy(np.array(elements, dtype=object))
        return list(client.infer("classifier", [tensor]).as_numpy("echo"))
    finally:
        client.close()


def test_bytes_that_are_not_utf8_are_the_clients_400(strings: Serving) -> None:
    assert texts(strings, b"hello", "z\u00fcrich".encode()) == [b"hello", "z\u00fcrich".encode()]
    with pytest.raises(InferenceServerException, match="input 'text' holds an element that is not UTF-8") as error:
        texts(strings, b"fine", b"\xff\xfe broken")
    assert error.value.status() == "400"
    # Batched with good requests, the bad one fails alone and nothing counts as the model failing.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _answer(strings, b"\xc3\x28" if i % 4 == 0 else b"ok"), range(32)))
    assert answers.count("400") == 8 and answers.count("200") == 24
    assert strings.metric("cutover_serving_requests_total", code="500") == 0


def _answer(serving: Serving, element: bytes) -> str:
    try:
        texts(serving, element)
    except InferenceServerException as error:
        return str(error.status())
    return "200"


def test_json_text_that_is_no_unicode_is_a_400(strings: Serving) -> None:
    body = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}'
    status, answer = strings.post(INFER, body)
    assert status == 400 and "input 'text': BYTES data is not Unicode text" in answer["error"]


@pytest.fixture(scope="module")
def unbounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    """The classifier with training statistics and no declared value range: NaN and infinite
    values reach the model and the out-of-distribution scorer."""
    workdir = tmp_path_factory.mktemp("unbounded")
    model = sample_models.onnx_classifier(workdir / "good.onnx", "good")
    statistics = sample_models.write_training_statistics(workdir / "statistics.json")
    ood = json.dumps({"statisticsUri": str(statistics), "input": "input", "threshold": 4})
    serving = Serving(workdir, "--format", "onnx", "--model-uri", str(model), "--ood", ood).start()
    yield serving
    assert serving.stop() == 0


def test_nan_and_infinite_inputs_leave_the_histograms_readable(unbounded: Serving) -> None:
    rows = [[0.1, 1.2, -1.5, 0.5], [math.nan, 0, 0, 0], [math.inf, 0, 0, 0], [-math.inf, 1, 1, 1]]
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 4], "data": rows}]})
    status, answer = unbounded.post(INFER, body.encode())  # json writes NaN and Infinity, as tritonclient does
    assert status == 200, answer
    assert unbounded.metric("cutover_prediction_confidence_count") == 1
    assert math.isfinite(unbounded.metric("cutover_prediction_confidence_sum"))
    assert unbounded.metric("cutover_out_of_distribution_score_count") == 1
    assert math.isfinite(unbounded.metric("cutover_out_of_distribution_score_sum"))
    assert unbounded.metric("cutover_out_of_distribution_total") == 3  # no score is in the distribution


header_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", " 12", "1_0", "0x10", "\u0661\u0662", "1e3", "+5", "-0", "nan"]),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20),
)


@st.composite
def string_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A request for the string model: BYTES elements of any bytes, in JSON or binary, with any
    header length and request id."""
    elements = draw(st.lists(st.binary(max_size=12), max_size=6))
    tensor: dict[str, object] = {"name": "text", "datatype": "BYTES", "shape": [len(elements)]}
    payload = b"".join(len(e).to_bytes(4, "little") + e for e in elements)
    binary = draw(st.booleans())
    if binary:
        tensor["parameters"] = {"binary_data_size": len(payload)}
    else:
        tensor["data"] = [e.decode("latin-1") for e in elements]
    request: dict[str, object] = {"inputs": [tensor]}
    if draw(st.booleans()):
        request["id"] = draw(st.text(max_size=10))
    header = json.dumps(request).encode()
    headers = {"X-Request-Id": draw(header_values)}
    if binary or draw(st.booleans()):
        headers[HEADER_LENGTH] = draw(st.just(str(len(header))) | header_values)
    return header + (payload if binary else b""), {k: v.encode().decode("latin-1") for k, v in headers.items()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=string_requests())
def test_random_requests_to_a_string_model_are_never_5xx(
    strings: Serving, request: tuple[bytes, dict[str, str]]
) -> None:
    check(*Client(strings.port).post(INFER, *request))
