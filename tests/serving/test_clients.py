"""`cutover serve` driven by clients the project did not write, as their users run them: Triton's
perf_analyzer (the C++ binary of the tritonclient wheel, installed by hack/perf-analyzer) against
a batching server, KServe's REST client (from KServe's own environment, built by
hack/kserve-client), and the kubelet's probes while large requests are decoded. The clients are
installed by `make test`; a missing one fails, never skips."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.serving import KSERVE
from cutover.api.contract import PROBE_TIMEOUT_SECONDS
from cutover.serving import sample_models
from tests.support.waiting import wait_until

from .support import Serving, probe_while
from .test_fuzz import gateway, server  # noqa: F401 - the fuzzed server and the gateway in front of it

REPO = Path(__file__).resolve().parents[2]
PERF_ANALYZER = REPO / ".tools" / "perf-analyzer"
KSERVE_CLIENT = Path(__file__).with_name("kserve_client.py")
MAX_BATCH_SIZE = 8
ADMIN = {"Authorization": "Bearer cut_fuzz-admin"}
"""The gateway fixture's admin key."""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_models.onnx_classifier(tmp_path_factory.mktemp("clients") / "good.onnx", "good")


@pytest.fixture(scope="module")
def batching(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    workdir = tmp_path_factory.mktemp("batching")
    serving = Serving(
        workdir,
        "--format",
        "onnx",
        "--model-uri",
        str(model),
        "--max-batch-size",
        str(MAX_BATCH_SIZE),
        "--audit-log",
        str(workdir / "audit.jsonl"),
    ).start()
    yield serving
    assert serving.stop() == 0


def perf_analyzer(address: str, *args: str) -> str:
    """perf_analyzer's report of a short run against the classifier at ``address`` (host:port;
    windows of 100 requests, whatever their spread)."""
    binary = PERF_ANALYZER / "bin" / "perf_analyzer"
    assert binary.exists(), f"{binary} is missing: run hack/perf-analyzer (make test does)"
    done = subprocess.run(
        [
            str(binary),
            "-m",
            "classifier",
            "-u",
            address,
            "--measurement-mode",
            "count_windows",
            "--measurement-request-count",
            "100",
            "--max-trials",
            "3",
            "--stability-percentage",
            "1000",  # a test, not a measurement: any three windows will do on a loaded machine
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LD_LIBRARY_PATH": str(PERF_ANALYZER / "lib")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("batch", [4, 1])
def test_perf_analyzer_drives_a_batching_server(batching: Serving, batch: int) -> None:
    """perf_analyzer reads the model configuration and refuses ``-b 4`` unless ``max_batch_size``
    says the model batches; that field read 0 whenever the batch queue was empty."""
    status, config = batching.get("/v2/models/classifier/config")
    assert status == 200 and config["max_batch_size"] == MAX_BATCH_SIZE, config
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
    answered = batching.metric("cutover_serving_requests_total", code="200")
    rows = batching.metric("cutover_predictions_total")
    report = perf_analyzer(batching.url.removeprefix("http://"), "-b", str(batch))
    assert f"Batch size: {batch}" in report and "Throughput:" in report, report
    # The server-side section, from Triton's statistics extension (/v2/models/{name}/stats).
    assert "Server:" in report and "compute infer" in report, report
    requests = batching.metric("cutover_serving_requests_total", code="200") - answered
    assert requests >= 100 and batching.metric("cutover_predictions_total") - rows == requests * batch
    assert batching.metric("cutover_serving_requests_total", code="500") == 0


def test_perf_analyzer_through_the_gateway(request: pytest.FixtureRequest) -> None:
    """The gateway (the fuzz module's, in front of a batching server) answers the server metadata
    (it was a 404, where perf_analyzer stopped) and passes on the model's configuration, so
    perf_analyzer batches through it with a key."""
    address = f"127.0.0.1:{request.getfixturevalue('gateway')}"
    key = f"Authorization:{ADMIN['Authorization']}"
    report = perf_analyzer(address, "-b", "4", "-H", key, "--input-data", "zero")  # random bits are out of range
    assert "Batch size: 4" in report and "Throughput:" in report, report


def kserve(url: str, *requests: dict[str, Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """KServe's InferenceRESTClient's answers to ``requests`` to the classifier at ``url`` (see
    kserve_client.py), sent with ``headers``."""
    python = KSERVE.bin / "python"
    assert python.exists(), f"{python} is missing: run hack/kserve-client (make test does)"
    done = subprocess.run(
        [str(python), str(KSERVE_CLIENT), url, "classifier", json.dumps(requests), json.dumps(headers or {})],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answers: list[dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
    return answers


def audit_ids(serving: Serving) -> set[str]:
    path = serving.log_path.parent / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {json.loads(line)["request_id"] for line in lines}


def test_kserve_client_reads_answers_ids_and_the_reasons_of_errors(batching: Serving, model: Path) -> None:
    x = sample_models.sample_inputs(3, seed=4)
    tensor = {"name": "input", "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}
    good, named, wrong_shape, out_of_type = kserve(
        batching.url,
        {"inputs": [tensor]},
        {"id": "kserve-1", "inputs": [tensor]},
        {"inputs": [{**tensor, "shape": [4, 3]}]},
        {"inputs": [{**tensor, "datatype": "INT32", "data": [1] * 12}]},
    )
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(good["outputs"]["probabilities"], session.run(None, {"input": x})[0], rtol=1e-6)
    # A request without an id is answered with one (the protocol's response schema requires it),
    # the one its audit record has.
    assert good["id"] and named["id"] == "kserve-1"
    wait_until(lambda: {good["id"], "kserve-1"} <= audit_ids(batching), 10, "the audit records")
    # KServe reads the reason only from a body typed exactly application/json (no charset).
    assert wrong_shape["status"] == 400 and "has shape [4, 3]; the model takes [-1, 4]" in wrong_shape["error"]
    assert out_of_type["status"] == 400 and "input 'input' is INT32; the model takes FP32" in out_of_type["error"]


def test_kserve_client_through_the_gateway(request: pytest.FixtureRequest) -> None:
    """The gateway's own errors and those it passes on reach KServe's client with their reason."""
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 1.2, -1.5, 0.5]}
    url = f"http://127.0.0.1:{request.getfixturevalue('gateway')}"
    good, wrong_shape = kserve(url, {"inputs": [tensor]}, {"inputs": [{**tensor, "shape": [2, 2]}]}, headers=ADMIN)
    assert good["status"] == 200 and good["id"] and len(good["outputs"]["probabilities"][0]) == 3
    assert wrong_shape["status"] == 400 and "has shape [2, 2]; the model takes [-1, 4]" in wrong_shape["error"]
    (unauthorized,) = kserve(url, {"inputs": [tensor]})
    assert unauthorized["status"] == 401 and "an API key is required" in unauthorized["error"]


def test_liveness_answers_within_the_probe_timeout_while_three_50_mb_requests_decode(batching: Serving) -> None:
    """JSON decoding holds the GIL; done on the event loop it stalled /v2/health/live 2.8 s under
    three such requests, and the kubelet restarts a pod whose liveness probe times out."""
    x = sample_models.sample_inputs(600_000, seed=5)
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    body = json.dumps({"inputs": [tensor]}).encode()
    assert len(body) > 45_000_000
    statuses: list[int] = []

    def send() -> None:  # the answer is read, not parsed: parsing 36 MB here would stall this process's probes
        request = urllib.request.Request(batching.url + "/v2/models/classifier/infer", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            statuses.append(response.status)

    answered = probe_while(batching.url + "/v2/health/live", [threading.Thread(target=send) for _ in range(3)])
    assert statuses == [200, 200, 200]
    assert len(answered) > 10 and max(answered) < PROBE_TIMEOUT_SECONDS, sorted(answered)[-5:]


@pytest.mark.parametrize(
    "path",
    [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/classifier",
        "/v2/models/classifier/ready",
        "/v2/models/classifier/config",
        "/v2/repository/index",
    ],
)
def test_every_json_answer_is_typed_exactly_application_json(batching: Serving, path: str) -> None:
    """JSON is UTF-8 by definition; a charset parameter makes KServe's client drop what it reads."""
    method = "POST" if path.endswith("/index") else "GET"
    request = urllib.request.Request(batching.url + path, data=b"{}" if method == "POST" else None, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json", path
        json.loads(response.read())
