"""The TensorFlow SavedModel adapter: SavedModels built here (a dense classifier with fixed
weights, a text model with a ``tf.string`` input), served by a real `cutover serve` and called
with tritonclient; every answer is compared with calling the same SavedModel in this process."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from cutover.serving import sample_models
from cutover.serving.adapters.tensorflow import TensorFlowAdapter

from .support import Serving
from .test_explain import brute_force_shapley

WEIGHT = np.array([[0.5, -1.0, 0.25], [1.5, 0.0, -0.5], [-0.75, 2.0, 0.5], [0.1, 0.2, -1.2]], dtype=np.float32)
BIAS = np.array([0.1, -0.2, 0.05], dtype=np.float32)


def save(path: Path, signature: Callable[..., Any], name: str = "serving_default", **variables: Any) -> Path:
    """A SavedModel at ``path`` whose only signature, ``name``, is the tf.function ``signature``;
    ``variables`` are the ones it reads (saved in variables/, as trained weights are)."""
    import tensorflow as tf

    holder = tf.Module()
    for key, variable in variables.items():
        setattr(holder, key, variable)
    tf.saved_model.save(holder, str(path), signatures={name: signature})
    return path


def classifier(path: Path, batch: int | None = None) -> Path:
    """input FP32 [batch, 4] -> probabilities FP32 [batch, 3] (softmax of a dense layer), label INT64 [batch]."""
    import tensorflow as tf

    weight, bias = tf.Variable(WEIGHT), tf.Variable(BIAS)

    @tf.function(input_signature=[tf.TensorSpec([batch, 4], tf.float32, name="input")])
    def serve(input: Any) -> dict[str, Any]:
        logits = input @ weight + bias
        return {"probabilities": tf.nn.softmax(logits), "label": tf.argmax(logits, axis=-1)}

    return save(path, serve, weight=weight, bias=bias)


def text_model(path: Path) -> Path:
    """text BYTES [batch], weight FP64 [batch] -> upper BYTES, length INT32 (bytes), short UINT8
    (length as uint8), weighted FP64 (length * weight), long BOOL (more than 3 bytes)."""
    import tensorflow as tf

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None], tf.float64, name="weight"),
        ]
    )
    def serve(text: Any, weight: Any) -> dict[str, Any]:
        length = tf.strings.length(text)
        return {
            "upper": tf.strings.upper(text),
            "length": length,
            "short": tf.cast(length, tf.uint8),
            "weighted": tf.cast(length, tf.float64) * weight,
            "long": length > 3,
        }

    return save(path, serve)


@functools.cache
def loaded(path: Path) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(str(path))


def in_process(path: Path, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    """What the SavedModel's serving signature answers when called here."""
    results = loaded(path).signatures["serving_default"](**inputs)
    return {name: tensor.numpy() for name, tensor in results.items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("savedmodels")
    classifier(folder / "classifier")
    # Inside the SavedModel, so a copy of the directory carries it: --ood names it relative to the model.
    sample_models.write_training_statistics(folder / "classifier" / "assets.extra" / "statistics.json")
    text_model(folder / "text")
    return folder


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    serving = Serving(
        tmp_path_factory.mktemp("serve"),
        "--format",
        "tensorflow",
        "--model-uri",
        str(models / "classifier"),
        "--max-batch-size",
        "16",
        "--max-queue-delay",
        "20ms",
        "--ood",
        json.dumps({"statisticsUri": "assets.extra/statistics.json", "input": "input", "threshold": 4}),
    ).start()
    yield serving
    assert serving.stop() == 0


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


def test_metadata_lists_the_signatures_tensors(server: Serving) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        metadata = client.get_model_metadata("classifier")
    finally:
        client.close()
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert sorted(metadata["outputs"], key=lambda t: t["name"]) == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]


@pytest.mark.parametrize("binary", [True, False])
def test_answers_equal_the_savedmodel_called_in_process(server: Serving, models: Path, binary: bool) -> None:
    x = rows(5, seed=1)
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label")]
        result = client.infer("classifier", [tensor], outputs=outputs)
    finally:
        client.close()
    expected = in_process(models / "classifier", input=x)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    assert server.metric("cutover_out_of_distribution_score_count") >= 5  # scored against the SavedModel's statistics


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(server: Serving, models: Path) -> None:
    inputs = [rows(1 + i % 3, seed=100 + i) for i in range(24)]
    calls_before = server.metric("cutover_serving_batch_size_count")
    rows_before = server.metric("cutover_serving_batch_size_sum")

    async def infer_all() -> list[np.ndarray]:
        client = aioclient.InferenceServerClient(server.url.removeprefix("http://"))
        try:

            async def one(x: np.ndarray) -> np.ndarray:
                tensor = aioclient.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                result = await client.infer("classifier", [tensor])
                return np.asarray(result.as_numpy("probabilities"))

            return await asyncio.gather(*(one(x) for x in inputs))
        finally:
            await client.close()

    answers = asyncio.run(infer_all())
    for x, answer in zip(inputs, answers, strict=True):
        np.testing.assert_allclose(answer, in_process(models / "classifier", input=x)["probabilities"], rtol=1e-6)
    calls = server.metric("cutover_serving_batch_size_count") - calls_before
    assert server.metric("cutover_serving_batch_size_sum") - rows_before == sum(len(x) for x in inputs)
    assert calls < len(inputs), "no two requests were batched together"


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [0, 0, 0, 0]}, "is FP64; the model takes FP32"),
        ({"name": "input", "datatype": "FP32", "shape": [2, 3], "data": [0] * 6}, "has shape [2, 3]"),
        ({"name": "input", "datatype": "BYTES", "shape": [1, 4], "data": ["a"] * 4}, "is BYTES; the model takes FP32"),
        ({"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}, "unknown input 'features'"),
        ({"name": "input", "datatype": "FP32", "shape": [4], "data": [0] * 4}, "has shape [4]"),
    ],
)
def test_wrong_input_is_a_400_that_says_what_is_wrong(server: Serving, tensor: dict[str, Any], message: str) -> None:
    status, answer = server.post("/v2/models/classifier/infer", {"inputs": [tensor]})
    assert status == 400 and message in answer["error"]
    assert server.get("/v2/health/ready")[0] == 200


def test_tritonclient_hears_a_400_for_a_wrong_datatype(server: Serving) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        tensor = httpclient.InferInput("input", [2, 4], "FP64")
        tensor.set_data_from_numpy(rows(2, seed=3).astype(np.float64))
        with pytest.raises(InferenceServerException) as refused:
            client.infer("classifier", [tensor])
    finally:
        client.close()
    assert refused.value.status() == "400" and "is FP64; the model takes FP32" in str(refused.value.message())


def test_string_input_reaches_the_model_as_the_bytes_sent(models: Path, tmp_path: Path) -> None:
    serving = Serving(tmp_path, "--format", "tensorflow", "--model-uri", str(models / "text"), name="text").start()
    try:
        client = httpclient.InferenceServerClient(serving.url.removeprefix("http://"))
        metadata = client.get_model_metadata("text")
        assert {t["name"]: t["datatype"] for t in metadata["inputs"]} == {"text": "BYTES", "weight": "FP64"}
        assert {t["name"]: (t["datatype"], t["shape"]) for t in metadata["outputs"]} == {
            "upper": ("BYTES", [-1]),
            "length": ("INT32", [-1]),
            "short": ("UINT8", [-1]),
            "weighted": ("FP64", [-1]),
            "long": ("BOOL", [-1]),
        }
        text = np.array([b"abc", "grüße".encode(), b"", b"\xff\xfe not utf-8"], dtype=object)
        weight = np.array([1.0, 0.5, 2.0, -1.0])
        tensors = [httpclient.InferInput("text", [4], "BYTES"), httpclient.InferInput("weight", [4], "FP64")]
        tensors[0].set_data_from_numpy(text)
        tensors[1].set_data_from_numpy(weight)
        result = client.infer("text", tensors)
        client.close()
        expected = in_process(models / "text", text=text, weight=weight)
        assert list(result.as_numpy("upper")) == list(expected["upper"])
        assert result.as_numpy("upper")[3] == b"\xff\xfe NOT UTF-8"  # raw bytes in and out, not decoded text
        for name in ("length", "short", "weighted", "long"):
            np.testing.assert_array_equal(result.as_numpy(name), expected[name])
            assert result.as_numpy(name).dtype == expected[name].dtype
        status, answer = serving.post(
            "/v2/models/text/infer",
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]},
        )
        assert status == 400 and "missing input 'weight'" in answer["error"]
        status, answer = serving.post(
            "/v2/models/text/infer",
            {
                "inputs": [
                    {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
                    {"name": "weight", "datatype": "FP64", "shape": [3], "data": [1, 2, 3]},
                ]
            },
        )
        assert status == 400, answer  # each input is valid alone; the model refuses rows that do not pair up
        assert answer["error"] == "the inputs disagree on their first (batch) dimension: 'text' has 2, 'weight' has 3"
    finally:
        serving.stop()


def test_a_savedmodel_can_be_the_fallback_baseline(models: Path, tmp_path: Path) -> None:
    uncertain = sample_models.onnx_classifier(tmp_path / "uncertain.onnx", "uncertain")
    baseline = {"format": "tensorflow", "storageUri": f"file://{models / 'classifier'}"}
    fallback = {"confidenceThreshold": 0.6, "previousVersion": False, "baseline": baseline}
    serving = Serving(
        tmp_path, "--format", "onnx", "--model-uri", str(uncertain), "--fallback", json.dumps(fallback)
    ).start()
    try:
        x = np.array([[0.0, 0.0, 3.0, 0.0]], dtype=np.float32)  # the SavedModel is sure of this one (p = 0.99)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]}
        status, answer = serving.post("/v2/models/classifier/infer", body)
        assert status == 200 and answer["parameters"]["fallback"] == "baseline"
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        expected = in_process(models / "classifier", input=x)
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"].ravel(), rtol=1e-6)
    finally:
        serving.stop()


def test_a_folder_that_is_not_a_savedmodel_is_not_ready_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a SavedModel")
    serving = Serving(tmp_path, "--format", "tensorflow", "--model-uri", str(tmp_path)).start(ready=False)
    try:
        status, answer = serving.load_error()
        assert status == 503 and f"{tmp_path} is not a TensorFlow SavedModel" in answer["error"]
    finally:
        serving.stop()


def test_a_checksum_for_a_savedmodel_directory_is_refused_by_name(models: Path, tmp_path: Path) -> None:
    checksum = "sha256:" + "0" * 64
    args = ("--format", "tensorflow", "--model-uri", str(models / "classifier"), "--checksum", checksum)
    serving = Serving(tmp_path, *args).start(ready=False)
    try:
        status, answer = serving.load_error()
        assert status == 503 and "is a directory (a SavedModel?): a checksum is for one file" in answer["error"]
    finally:
        serving.stop()


def test_signatures_the_server_cannot_serve_fail_the_load_naming_why(tmp_path: Path) -> None:
    """Loaded in this process: what a pod's ready endpoint would report."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input")])
    def complex_output(input: Any) -> dict[str, Any]:
        return {"spectrum": tf.signal.fft(tf.cast(input, tf.complex64))}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="input")])
    def any_rank(input: Any) -> dict[str, Any]:
        return {"twice": 2 * input}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input")])
    def identity(input: Any) -> dict[str, Any]:
        return {"output": tf.identity(input)}

    cases = [
        (save(tmp_path / "complex", complex_output), "output 'spectrum' is complex64, which the protocol cannot carry"),
        (save(tmp_path / "rank", any_rank), "input 'input' has no known rank"),
        (save(tmp_path / "predict", identity, name="predict"), "has no serving_default signature (it has: predict)"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            asyncio.run(TensorFlowAdapter(path).load())


def test_batching_needs_an_unknown_first_dimension(tmp_path: Path) -> None:
    async def batchable(path: Path) -> bool:
        adapter = TensorFlowAdapter(path)
        await adapter.load()
        await adapter.close()
        return adapter.batchable

    assert asyncio.run(batchable(classifier(tmp_path / "any-batch")))
    assert not asyncio.run(batchable(classifier(tmp_path / "two-rows", batch=2)))


def test_a_keras_export_is_served_by_its_serving_default_signature(tmp_path: Path) -> None:
    import keras

    features = keras.Input((4,), name="features")
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(features, dense(features))
    dense.set_weights([WEIGHT, BIAS])
    model.export(str(tmp_path / "keras"), format="tf_saved_model", verbose=False)

    async def served(x: np.ndarray) -> tuple[TensorFlowAdapter, dict[str, np.ndarray]]:
        adapter = TensorFlowAdapter(tmp_path / "keras")
        await adapter.load()
        try:
            return adapter, await adapter.infer({"features": x})
        finally:
            await adapter.close()

    x = rows(3, seed=5)
    adapter, outputs = asyncio.run(served(x))
    assert [t.metadata() for t in adapter.inputs] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert [t.metadata() for t in adapter.outputs] == [{"name": "output_0", "datatype": "FP32", "shape": [-1, 3]}]
    np.testing.assert_allclose(outputs["output_0"], np.asarray(model(x)), rtol=1e-6)


def test_serving_another_format_does_not_import_tensorflow(tmp_path: Path) -> None:
    """`cutover serve` for ONNX never pays TensorFlow's import time (seconds, hundreds of MB)."""
    model = sample_models.onnx_classifier(tmp_path / "good.onnx")
    code = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "import cutover.operator.cli, cutover.serving.server\n"
        "from cutover.serving import adapters\n"
        f"asyncio.run(adapters.local('onnx', Path({str(model)!r})).load())\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_a_savedmodel_is_explained_black_box(server: Serving, models: Path) -> None:
    """Shapley values of a TensorFlow model (its function called from the explanation thread,
    beside the batcher), against the training mean: exact, as the definition gives them."""
    x = rows(1, seed=7)
    predictions = server.metric("cutover_predictions_total")
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}

    status, answer = server.post("/v2/models/classifier/explain", {"inputs": [tensor]})

    assert status == 200, answer
    (explanation,) = answer["explanations"]
    assert (explanation["method"], explanation["background"]) == ("shapley_exact", {"rows": 1, "source": "mean"})
    probabilities = next(o for o in explanation["outputs"] if o["name"] == "probabilities")
    mean = np.array(sample_models.training_statistics()["mean"])[None]
    expected = brute_force_shapley(
        lambda r: in_process(models / "classifier", input=r.astype(np.float32))["probabilities"].astype(np.float64),
        x[0].astype(np.float64),
        mean,
    )
    np.testing.assert_allclose([a["attribution"] for a in probabilities["attributions"]], expected, atol=1e-6)
    assert server.metric("cutover_predictions_total") == predictions  # the batcher saw none of it
