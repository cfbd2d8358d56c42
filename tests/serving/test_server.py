"""`cutover serve` as clients meet it: the real process on a loopback port, called with the real
tritonclient (binary and JSON tensors), plus errors, batching, shedding, draining and metrics."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from cutover.serving import sample_models
from cutover.serving.protocol import HEADER_LENGTH, decode_response
from tests.support.waiting import wait_until

from .support import CLASSIFIER_INPUTS, Serving


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for variant in ("good", "slow", "faulty", "uncertain"):
        sample_models.onnx_classifier(folder / f"{variant}.onnx", variant)
    sample_models.write_training_statistics(folder / "statistics.json")
    return folder


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    workdir = tmp_path_factory.mktemp("serve")
    ood = json.dumps({"statisticsUri": str(models / "statistics.json"), "input": "input", "threshold": 4})
    serving = Serving(
        workdir,
        "--format",
        "onnx",
        "--model-uri",
        str(models / "good.onnx"),
        "--inputs",
        CLASSIFIER_INPUTS,
        "--ood",
        ood,
        "--audit-log",
        str(workdir / "audit.jsonl"),
    ).start()
    yield serving
    assert serving.stop() == 0


def expected(models: Path, x: np.ndarray, variant: str = "good") -> np.ndarray:
    session = ort.InferenceSession(str(models / f"{variant}.onnx"), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"input": x})[0]
    return result


def test_tritonclient_health_and_metadata(server: Serving) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("classifier") and client.is_model_ready("classifier", "1")
    assert not client.is_model_ready("classifier", "2")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("classifier")
    assert metadata["platform"] == "onnx_onnxv1"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    assert client.get_model_config("classifier")["input"][0]["name"] == "input"
    client.close()


@pytest.mark.parametrize(("binary_in", "binary_out"), [(True, True), (False, False), (True, False), (False, True)])
def test_tritonclient_infer_binary_and_json(server: Serving, models: Path, binary_in: bool, binary_out: bool) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    x = sample_models.sample_inputs(5, seed=3)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary_out)]
    result = client.infer("classifier", [tensor], outputs=outputs, request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected(models, x), rtol=1e-6)
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_version"] == "1"
    client.close()


def test_tritonclient_default_request_gets_binary_outputs(server: Serving, models: Path) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    x = sample_models.sample_inputs(2, seed=4)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("classifier", [tensor])
    output = result.get_output("probabilities")
    assert output is not None and output["parameters"]["binary_data_size"] == 2 * 3 * 4
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected(models, x), rtol=1e-6)
    client.close()


def test_tritonclient_aio_client(server: Serving, models: Path) -> None:
    async def call() -> np.ndarray:
        client = aioclient.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            x = sample_models.sample_inputs(3, seed=5)
            tensor = aioclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = await client.infer("classifier", [tensor])
            return np.asarray(result.as_numpy("probabilities"))
        finally:
            await client.close()

    np.testing.assert_allclose(asyncio.run(call()), expected(models, sample_models.sample_inputs(3, seed=5)), rtol=1e-6)


def test_errors_reach_tritonclient_with_the_reason(server: Serving) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    x = np.zeros((1, 4), dtype=np.float64)
    tensor = httpclient.InferInput("input", [1, 4], "FP64")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="input 'input' is FP64; the model takes FP32"):
        client.infer("classifier", [tensor])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
    client.close()


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 5], "data": [0] * 5}]}, 400, "shape [1, 5]"),
        ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 99]}]}, 400, "maximum"),
        ({"inputs": [{"name": "other", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]}, 400, "unknown input"),
        (
            {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}],
                "outputs": [{"name": "nope"}],
            },
            400,
            "unknown output",
        ),
    ],
)
def test_invalid_requests_are_400_json(server: Serving, body: dict[str, object], code: int, message: str) -> None:
    status, answer = server.post("/v2/models/classifier/infer", body)
    assert status == code and message in answer["error"]


def test_unknown_routes_and_methods_are_json_errors(server: Serving) -> None:
    assert server.get("/v2/nothing")[0] == 404
    assert server.get("/v2/models/classifier/infer") == (405, {"error": "Method Not Allowed"})
    with pytest.raises(urllib.error.HTTPError) as refused:  # RFC 9110: a 405 must say what is allowed
        urllib.request.urlopen(server.url + "/v2/models/classifier/infer", timeout=5)
    assert refused.value.code == 405 and refused.value.headers["Allow"] == "POST"
    status, answer = server.post("/v2/models/other/infer", {"inputs": []})
    assert status == 404 and "unknown model" in answer["error"]


def test_raw_binary_request(server: Serving, models: Path) -> None:
    x = sample_models.sample_inputs(1, seed=6)
    request = urllib.request.Request(
        f"{server.url}/v2/models/classifier/infer", data=x.tobytes(), headers={HEADER_LENGTH: "0"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        _, outputs = decode_response(response.read(), response.headers[HEADER_LENGTH])
    np.testing.assert_allclose(outputs["probabilities"], expected(models, x), rtol=1e-6)


def test_oversized_body_is_413(models: Path, tmp_path: Path) -> None:
    serving = Serving(
        tmp_path, "--format", "onnx", "--model-uri", str(models / "good.onnx"), "--max-request-bytes", "1000"
    ).start()
    try:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [100, 4], "data": [0.5] * 400}]}
        status, answer = serving.post("/v2/models/classifier/infer", body)
        assert status == 413 and "error" in answer
        assert serving.get("/v2/health/live")[0] == 200
    finally:
        serving.stop()


def test_metrics_carry_model_and_revision(server: Serving) -> None:
    before = server.metric("cutover_serving_requests_total", code="200", revision="rev-1", model="classifier")
    x = sample_models.sample_inputs(4, seed=8)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 4], "data": x.ravel().tolist()}]}
    assert server.post("/v2/models/classifier/infer", body)[0] == 200
    assert server.metric("cutover_serving_requests_total", code="200", revision="rev-1") == before + 1
    text = server.metrics()
    for name in (
        "cutover_serving_request_duration_seconds_bucket",
        "cutover_predictions_total",
        "cutover_prediction_confidence_bucket",
        "cutover_out_of_distribution_score_bucket",
    ):
        assert f'{name}{{model="classifier",namespace="tests",revision="rev-1"' in text or name in text


def test_out_of_distribution_inputs_are_counted(server: Serving) -> None:
    before = server.metric("cutover_out_of_distribution_total")
    far = sample_models.sample_inputs(10, seed=9, shift=8.0)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [10, 4], "data": far.ravel().tolist()}]}
    assert server.post("/v2/models/classifier/infer", body)[0] == 200
    assert server.metric("cutover_out_of_distribution_total") >= before + 9


def test_audit_log_has_one_line_per_prediction(server: Serving) -> None:
    x = sample_models.sample_inputs(1, seed=10)
    body = {
        "id": "audit-me",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}],
    }
    assert server.post("/v2/models/classifier/infer", body)[0] == 200
    path = Path(server.log_path.parent / "audit.jsonl")

    def record() -> dict[str, object] | None:
        if not path.exists():
            return None
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["request_id"] == "audit-me":
                return dict(entry)
        return None

    entry = wait_until(record, timeout=10, what="the audit record")
    assert entry["revision"] == "rev-1" and entry["model"] == "classifier"
    assert str(entry["input_digest"]).startswith("sha256:")
    assert entry["fallback"] is None and entry["latency_ms"] is not None


def test_model_failure_is_500_and_counted(models: Path, tmp_path: Path) -> None:
    serving = Serving(tmp_path, "--format", "onnx", "--model-uri", str(models / "faulty.onnx")).start()
    try:
        x = sample_models.sample_inputs(1, seed=0)
        x[0, 0] = sample_models.FAULTY_THRESHOLD + 1
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]}
        status, answer = serving.post("/v2/models/classifier/infer", body)
        assert status == 500 and "model failed" in answer["error"]
        assert serving.metric("cutover_serving_requests_total", code="500") == 1
        x[0, 0] = sample_models.FAULTY_THRESHOLD - 1
        body["inputs"][0]["data"] = x.ravel().tolist()  # type: ignore[index]
        assert serving.post("/v2/models/classifier/infer", body)[0] == 200
    finally:
        serving.stop()


async def _post_many(url: str, bodies: list[bytes], concurrency: int) -> list[tuple[int, bytes, dict[str, str]]]:
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(body: bytes) -> tuple[int, bytes, dict[str, str]]:
            async with semaphore, session.post(f"{url}/v2/models/classifier/infer", data=body) as response:
                return response.status, await response.read(), dict(response.headers)

        return await asyncio.gather(*(one(b) for b in bodies))


def _body(x: np.ndarray) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    ).encode()


def test_batching_answers_each_request_with_its_own_rows(models: Path, tmp_path: Path) -> None:
    serving = Serving(
        tmp_path,
        "--format",
        "onnx",
        "--model-uri",
        str(models / "slow.onnx"),
        "--max-batch-size",
        "16",
        "--max-queue-delay",
        "5ms",
    ).start()
    try:
        inputs = [sample_models.sample_inputs(1 + i % 3, seed=100 + i) for i in range(60)]
        results = asyncio.run(_post_many(serving.url, [_body(x) for x in inputs], concurrency=20))
        for x, (status, body, _) in zip(inputs, results, strict=True):
            assert status == 200
            answer = np.asarray(json.loads(body)["outputs"][0]["data"], dtype=np.float32).reshape(-1, 3)
            np.testing.assert_allclose(answer, expected(models, x, "slow"), rtol=1e-5, atol=1e-6)
        batches = serving.metric("cutover_serving_batch_size_count")
        rows = serving.metric("cutover_serving_batch_size_sum")
        assert rows == sum(x.shape[0] for x in inputs)
        assert batches < len(inputs), "no two requests were batched together"
    finally:
        serving.stop()


def test_full_queue_sheds_with_503_and_retry_after(models: Path, tmp_path: Path) -> None:
    serving = Serving(
        tmp_path,
        "--format",
        "onnx",
        "--model-uri",
        str(models / "slow.onnx"),
        "--max-batch-size",
        "1",
        "--max-queue-delay",
        "0ms",
        "--max-queue-size",
        "2",
    ).start()
    try:
        bodies = [_body(sample_models.sample_inputs(1, seed=i)) for i in range(40)]
        results = asyncio.run(_post_many(serving.url, bodies, concurrency=40))
        codes = [status for status, _, _ in results]
        assert set(codes) <= {200, 503} and 503 in codes and 200 in codes
        shed = [headers for status, _, headers in results if status == 503]
        assert all(h.get("Retry-After") == "1" for h in shed)
        assert serving.get("/v2/health/ready")[0] == 200
    finally:
        serving.stop()


def test_the_batch_queue_depth_is_exported_while_requests_wait(tmp_path: Path) -> None:
    """What the operations dashboard shows as queue depth: requests waiting for their batch,
    none once every one is answered."""
    model = sample_models.onnx_classifier(tmp_path / "slower.onnx", "slow", slow_work=3000)
    serving = Serving(
        tmp_path, "--format", "onnx", "--model-uri", str(model), "--max-batch-size", "1", "--max-queue-delay", "0ms"
    ).start()
    try:
        bodies = [_body(sample_models.sample_inputs(1, seed=i)) for i in range(8)]
        results: list[tuple[int, bytes, dict[str, str]]] = []
        thread = threading.Thread(target=lambda: results.extend(asyncio.run(_post_many(serving.url, bodies, 8))))
        thread.start()
        wait_until(lambda: serving.metric("cutover_serving_queue_depth") > 0, 10, "requests queued", interval=0.01)
        thread.join(60)
        assert [status for status, _, _ in results] == [200] * len(bodies)
        assert serving.metric("cutover_serving_queue_depth") == 0
    finally:
        serving.stop()


def test_sigterm_finishes_in_flight_requests(tmp_path: Path) -> None:
    model = sample_models.onnx_classifier(tmp_path / "slower.onnx", "slow", slow_work=3000)
    serving = Serving(tmp_path, "--format", "onnx", "--model-uri", str(model), "--shutdown-delay", "0.5").start()
    bodies = [_body(sample_models.sample_inputs(1, seed=i)) for i in range(30)]
    results: list[tuple[int, bytes, dict[str, str]]] = []

    def load() -> None:
        results.extend(asyncio.run(_post_many(serving.url, bodies, concurrency=30)))

    thread = threading.Thread(target=load)
    thread.start()
    wait_until(lambda: serving.metric("cutover_serving_in_flight") > 0, 10, "requests in flight", interval=0.01)
    assert serving.stop() == 0
    thread.join(30)
    assert [status for status, _, _ in results] == [200] * len(bodies)


def test_a_model_that_cannot_load_stays_live_and_says_why(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    serving = Serving(tmp_path, "--format", "onnx", "--model-uri", str(broken)).start(ready=False)
    try:
        status, answer = serving.load_error()
        assert status == 503 and "model failed to load" in answer["error"]
        assert serving.get("/v2/health/live")[0] == 200
        status, answer = serving.post("/v2/models/classifier/infer", {"inputs": []})
        assert status == 503 and "not ready" in answer["error"]
    finally:
        serving.stop()
