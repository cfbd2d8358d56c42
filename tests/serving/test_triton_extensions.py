"""Triton's extensions on `cutover serve`, as tritonclient uses them: classification
(``class_count``), statistics, the repository index, parameters the server does not honour, and
response and request compression; then the same through the gateway."""

from __future__ import annotations

import gzip
import json
import subprocess
import urllib.request
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from aiohttp.test_utils import TestServer
from aiohttp.web_response import ContentCoding
from tritonclient.utils import InferenceServerException

from cutover.serving import sample_models
from cutover.serving.classification import classify
from cutover.serving.compression import MIN_BYTES, preferred_coding
from cutover.serving.gateway.app import Gateway, GatewayConfig
from cutover.serving.server import EXTENSIONS

from .support import Serving, openai_error
from .test_adapters import chat_upstream  # noqa: F401  (the module's fixture)
from .test_grpc import GrpcServing

LABELS = ["low", "medium", "high"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    sample_models.onnx_classifier(folder / "good.onnx")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return folder


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServing]:
    outputs = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3], "labelFilename": "labels.txt"}]
    serving = GrpcServing(
        tmp_path_factory.mktemp("serve"),
        "--format",
        "onnx",
        "--model-uri",
        str(models / "good.onnx"),
        "--outputs",
        json.dumps(outputs),
        "--max-batch-size",
        "8",
        "--max-queue-delay",
        "2ms",
    ).start()
    yield serving
    assert serving.stop() == 0


@pytest.fixture
def client(server: Serving) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def probabilities(models: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(models / "good.onnx"), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"input": x})[0]
    return result


def top_classes(scores: np.ndarray, count: int) -> list[list[str]]:
    """What Triton answers for ``class_count``: "value:index:label", largest first."""
    return [
        [f"{row[i]:f}:{i}:{LABELS[i]}" for i in sorted(range(len(row)), key=lambda i: -row[i])[:count]]
        for row in scores
    ]


def texts(array: np.ndarray) -> list[list[str]]:
    """A BYTES output as tritonclient gives it (bytes from binary, str from JSON), as text."""
    return [[v.decode() if isinstance(v, bytes) else v for v in row] for row in array.tolist()]


def infer_input(x: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


# ---- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_class_count_answers_the_top_classes_with_their_labels(
    client: httpclient.InferenceServerClient, models: Path, binary: bool
) -> None:
    x = sample_models.sample_inputs(5, seed=11)
    wanted = [httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)]
    result = client.infer("classifier", [infer_input(x, binary)], outputs=wanted)
    output = result.get_output("probabilities")
    assert output is not None and output["datatype"] == "BYTES" and output["shape"] == [5, 2]
    assert texts(result.as_numpy("probabilities")) == top_classes(probabilities(models, x), 2)


def test_class_count_beyond_the_classes_answers_every_class(
    client: httpclient.InferenceServerClient, models: Path
) -> None:
    x = sample_models.sample_inputs(1, seed=12)
    wanted = [httpclient.InferRequestedOutput("probabilities", class_count=10)]
    result = client.infer("classifier", [infer_input(x)], outputs=wanted)
    assert texts(result.as_numpy("probabilities")) == top_classes(probabilities(models, x), 3)


def test_class_count_of_an_empty_batch_is_an_empty_answer(server: Serving) -> None:
    """Zero rows in is zero rows out, as without a class count (it was a 500, counted against the
    revision)."""
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 4], "data": []}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
    }
    status, answer = server.post("/v2/models/classifier/infer", body)
    assert status == 200, answer
    assert answer["outputs"][0] | {"data": []} == {
        "name": "probabilities",
        "datatype": "BYTES",
        "shape": [0, 2],
        "data": [],
    }


@pytest.mark.parametrize(
    ("shape", "batched", "expected"),
    [
        ((0, 3), True, (0, 2)),
        ((0, 3, 2), True, (0, 2)),
        ((2, 0), True, (2, 0)),
        ((0,), False, (0,)),
        ((0, 3), False, (0,)),
    ],
)
def test_every_empty_output_classifies_to_an_empty_answer(
    shape: tuple[int, ...], batched: bool, expected: tuple[int, ...]
) -> None:
    assert classify(np.zeros(shape, dtype=np.float32), 2, batched=batched).shape == expected


# ---- parameters --------------------------------------------------------------------------------


def test_parameters_the_server_does_not_honour_are_refused_by_name(client: httpclient.InferenceServerClient) -> None:
    x = sample_models.sample_inputs(1, seed=13)
    refused: list[tuple[str, dict[str, Any]]] = [
        ("sequence_id", {"sequence_id": 7, "sequence_start": True}),
        ("priority", {"priority": 2}),
        ("timeout", {"timeout": 1000}),
        ("tenant", {"parameters": {"tenant": "a"}}),
    ]
    for name, options in refused:
        with pytest.raises(InferenceServerException, match=f"parameter '{name}' is not supported"):
            client.infer("classifier", [infer_input(x)], **options)
    in_shared_memory = httpclient.InferInput("input", [1, 4], "FP32")
    in_shared_memory.set_shared_memory("inputs", 16)
    with pytest.raises(InferenceServerException, match="input 'input': parameter 'shared_memory_region'"):
        client.infer("classifier", [in_shared_memory])
    out_shared_memory = httpclient.InferRequestedOutput("probabilities")
    out_shared_memory.set_shared_memory("outputs", 12)
    with pytest.raises(InferenceServerException, match="output 'probabilities': parameter 'shared_memory_region'"):
        client.infer("classifier", [infer_input(x)], outputs=[out_shared_memory])


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"classification": 0}, "'classification' must be a positive integer"),
        ({"classification": "2"}, "'classification' must be a positive integer"),
        ({"binary_data": "yes"}, "'binary_data' must be true or false"),
        ({"content_type": "np"}, "parameter 'content_type' is not supported"),
    ],
)
def test_bad_output_parameters_are_400(server: Serving, parameters: dict[str, Any], message: str) -> None:
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, -2, 0.5]}],
        "outputs": [{"name": "probabilities", "parameters": parameters}],
    }
    status, answer = server.post("/v2/models/classifier/infer", body)
    assert status == 400 and message in answer["error"]


def test_parameters_at_their_default_ask_for_nothing_and_pass(server: Serving) -> None:
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, -2, 0.5]}],
        "parameters": {"sequence_id": 0, "sequence_start": False, "sequence_end": False, "priority": 0},
    }
    status, answer = server.post("/v2/models/classifier/infer", body)
    assert status == 200, answer


# ---- statistics, repository, metadata -------------------------------------------------------------


def test_statistics_count_each_stage_of_the_requests_answered(
    client: httpclient.InferenceServerClient, server: Serving
) -> None:
    def stats(**where: str) -> dict[str, Any]:
        answer = client.get_inference_statistics("classifier", **where)
        assert [(s["name"], s["version"]) for s in answer["model_stats"]] == [("classifier", "1")]
        entry: dict[str, Any] = answer["model_stats"][0]
        return entry

    before = stats()
    rows = [1, 3, 2, 4]
    for n in rows:
        client.infer("classifier", [infer_input(sample_models.sample_inputs(n, seed=n))])
    with pytest.raises(InferenceServerException):
        client.infer("classifier", [infer_input(np.zeros((1, 5), dtype=np.float32))])
    after = stats(model_version="1")
    assert client.get_inference_statistics()["model_stats"][0]["name"] == "classifier"
    with pytest.raises(InferenceServerException, match="unknown version '2'"):
        client.get_inference_statistics("classifier", "2")

    def grew(*path: str) -> int:
        old: Any = before
        new: Any = after
        for key in path:
            old, new = old[key], new[key]
        return int(new) - int(old)

    assert grew("inference_stats", "success", "count") == len(rows)
    assert grew("inference_stats", "fail", "count") == 1
    assert grew("inference_count") == sum(rows)
    assert 1 <= grew("execution_count") <= len(rows)
    stages = ("queue", "compute_input", "compute_infer", "compute_output")
    for stage in stages:
        assert grew("inference_stats", stage, "count") == len(rows)
    assert grew("inference_stats", "compute_infer", "ns") > 0
    assert grew("inference_stats", "success", "ns") >= sum(grew("inference_stats", s, "ns") for s in stages)
    assert sum(b["compute_infer"]["count"] for b in after["batch_stats"]) == after["execution_count"]
    assert after["last_inference"] > 0


def test_statistics_count_prediction_cache_hits_and_misses(models: Path, tmp_path: Path) -> None:
    serving = Serving(
        tmp_path, "--format", "onnx", "--model-uri", str(models / "good.onnx"), "--prediction-cache-entries", "8"
    ).start()
    client = httpclient.InferenceServerClient(serving.url.removeprefix("http://"))
    try:
        x = sample_models.sample_inputs(2, seed=19)
        for _ in range(3):
            client.infer("classifier", [infer_input(x)])
        stats = client.get_inference_statistics("classifier")["model_stats"][0]["inference_stats"]
        assert (stats["cache_miss"]["count"], stats["cache_hit"]["count"]) == (1, 2)
        assert stats["compute_infer"]["count"] == 1 and stats["success"]["count"] == 3
        assert stats["compute_input"]["count"] == stats["compute_output"]["count"] == 3
    finally:
        client.close()
        serving.stop()


def test_repository_index_lists_the_model_and_loading_is_refused(
    client: httpclient.InferenceServerClient, server: Serving
) -> None:
    index = [{"name": "classifier", "version": "1", "state": "READY", "reason": ""}]
    assert client.get_model_repository_index() == index
    assert server.post("/v2/repository/index", {"ready": True}) == (200, index)
    assert server.post("/v2/repository/index", {"ready": "yes"})[0] == 400
    for action in ("load", "unload"):
        status, answer = server.post(f"/v2/repository/models/classifier/{action}", b"")
        assert status == 403 and "the cutover operator decides" in answer["error"]
    with pytest.raises(InferenceServerException, match="cannot load model 'classifier'"):
        client.load_model("classifier")


def test_server_metadata_lists_the_extensions_implemented(client: httpclient.InferenceServerClient) -> None:
    assert sorted(client.get_server_metadata()["extensions"]) == sorted(
        ["binary_tensor_data", "classification", "explain", "model_configuration", "model_repository", "statistics"]
    )
    assert sorted(EXTENSIONS) == sorted(client.get_server_metadata()["extensions"])


def test_the_extensions_over_grpc(server: GrpcServing, models: Path) -> None:
    client = grpcclient.InferenceServerClient(server.target)
    try:
        x = sample_models.sample_inputs(4, seed=18)
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        wanted = [grpcclient.InferRequestedOutput("probabilities", class_count=2)]
        result = client.infer("classifier", [tensor], outputs=wanted)
        assert texts(result.as_numpy("probabilities")) == top_classes(probabilities(models, x), 2)
        with pytest.raises(InferenceServerException, match="parameter 'sequence_id' is not supported"):
            client.infer("classifier", [tensor], sequence_id=3)
        statistics = client.get_inference_statistics("classifier", as_json=True)["model_stats"][0]
        assert statistics["name"] == "classifier" and int(statistics["inference_count"]) >= 4
        assert client.get_model_repository_index(as_json=True)["models"] == [
            {"name": "classifier", "version": "1", "state": "READY"}
        ]
        with pytest.raises(InferenceServerException, match="the cutover operator decides"):
            client.unload_model("classifier")
    finally:
        client.close()


# ---- compression -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip, deflate, br", ContentCoding.gzip),
        ("deflate;q=1, gzip;q=0.5", ContentCoding.deflate),
        ("*;q=0.3", ContentCoding.gzip),
        ("gzip;q=0, *", ContentCoding.deflate),
        ("br, zstd", None),
        ("identity", None),
        ("", None),
    ],
)
def test_accept_encoding_chooses_gzip_or_deflate_by_weight(accept: str, coding: ContentCoding | None) -> None:
    assert preferred_coding(accept) == coding


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_compression_both_ways(
    client: httpclient.InferenceServerClient, models: Path, algorithm: str, binary: bool
) -> None:
    x = sample_models.sample_inputs(300, seed=14)
    wanted = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer(
        "classifier",
        [infer_input(x, binary)],
        outputs=wanted,
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities(models, x), rtol=1e-6)


def post_raw(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url + "/v2/models/classifier/infer", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def json_request(rows: int) -> bytes:
    x = sample_models.sample_inputs(rows, seed=15)
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    ).encode()


def test_large_answers_are_compressed_and_small_ones_and_errors_are_not(server: Serving) -> None:
    status, headers, body = post_raw(server.url, json_request(200), {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(body))["outputs"][0]["data"]) == 600
    status, headers, body = post_raw(server.url, json_request(200), {"Accept-Encoding": "deflate"})
    assert headers["Content-Encoding"] == "deflate" and json.loads(zlib.decompress(body))["outputs"]
    status, headers, body = post_raw(server.url, json_request(1), {"Accept-Encoding": "gzip"})
    assert status == 200 and "Content-Encoding" not in headers and len(body) < MIN_BYTES
    error = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": ["x" * 2000] * 4}]})
    status, headers, body = post_raw(server.url, error.encode(), {"Accept-Encoding": "gzip"})
    assert status == 400 and "Content-Encoding" not in headers and json.loads(body)["error"]


@pytest.mark.parametrize("path", ["/v2/models/classifier/infer", "/v2/repository/index"])
def test_a_body_that_does_not_decode_as_its_content_encoding_says_is_a_4xx(server: Serving, path: str) -> None:
    for encoding, code in (("gzip", 400), ("deflate", 400), ("compress", 415)):
        status, answer = server.post(path, b"not compressed at all", {"Content-Encoding": encoding})
        assert (status, encoding) == (code, encoding) and answer["error"]


def test_chat_answers_are_compressed_and_compressed_chat_requests_read(
    tmp_path: Path,
    chat_upstream: str,  # noqa: F811
) -> None:
    serving = Serving(
        tmp_path, "--format", "llm", "--upstream", chat_upstream, "--upstream-model", "tiny-llm", name="assistant"
    ).start()
    try:
        long = "word " * 400
        request = {"model": "assistant", "messages": [{"role": "user", "content": f"say: {long}"}]}
        sent = urllib.request.Request(
            serving.url + "/v1/chat/completions",
            data=gzip.compress(json.dumps(request).encode()),
            headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(sent, timeout=30) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            answer = json.loads(gzip.decompress(response.read()))
        assert answer["choices"][0]["message"]["content"] == long.strip()
        status, error = serving.post("/v1/chat/completions", b"not compressed at all", {"Content-Encoding": "gzip"})
        assert status == 400 and "cannot be read" in openai_error(error)
    finally:
        serving.stop()


async def test_asyncio_tritonclient_reads_every_answer_while_it_always_accepts_compression(
    server: Serving, models: Path
) -> None:
    """tritonclient.http.aio sends aiohttp's Accept-Encoding (gzip, deflate, br) on every call and
    decompresses inference answers only."""
    client = aioclient.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        await _every_call(client, models)
    finally:
        await client.close()


async def _every_call(client: aioclient.InferenceServerClient, models: Path) -> None:
    x = sample_models.sample_inputs(300, seed=16)
    tensor = aioclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = await client.infer("classifier", [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities(models, x), rtol=1e-6)
    wanted = [aioclient.InferRequestedOutput("probabilities", class_count=1)]
    result = await client.infer("classifier", [tensor], outputs=wanted)
    assert texts(result.as_numpy("probabilities")) == top_classes(probabilities(models, x), 1)
    statistics = await client.get_inference_statistics("classifier")
    assert statistics["model_stats"][0]["inference_stats"]["success"]["count"] >= 2
    assert (await client.get_model_metadata("classifier"))["name"] == "classifier"
    assert (await client.get_model_config("classifier"))["max_batch_size"] == 8
    bad = aioclient.InferInput("input", [300, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((300, 5), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        await client.infer("classifier", [bad])


# ---- through the gateway ---------------------------------------------------------------------


@pytest.fixture
async def gateway_url(server: Serving) -> AsyncIterator[str]:
    """The gateway app routing model "classifier" to the real `cutover serve`."""
    gateway = Gateway(GatewayConfig(auth=False))
    gateway.unlisted = set()
    gateway.set_resolver(lambda namespace, service: server.url)
    gateway.replace_deployments(
        [
            {
                "metadata": {"namespace": "ns", "name": "classifier", "generation": 1},
                "spec": {"model": {"name": "classifier", "version": "1"}, "strategy": {"type": "canary"}},
                "status": {
                    "observedGeneration": 1,
                    "stableRevision": "rev-1",
                    "history": [{"revision": "rev-1", "modelVersion": "1"}],
                    "traffic": [
                        {"service": "svc", "revision": "rev-1", "role": "stable", "weight": 100, "mirrorPercent": 0}
                    ],
                },
            }
        ]
    )
    test_server = TestServer(gateway.app(), host="127.0.0.1")
    await test_server.start_server()
    yield str(test_server.make_url("")).rstrip("/")
    await test_server.close()
    await gateway.close()


async def test_the_extensions_and_compression_pass_through_the_gateway(gateway_url: str, models: Path) -> None:
    client = aioclient.InferenceServerClient(gateway_url.removeprefix("http://"))
    try:
        await _every_call(client, models)
        x = sample_models.sample_inputs(300, seed=17)
        tensor = aioclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=False)
        wanted = [aioclient.InferRequestedOutput("probabilities", binary_data=False)]
        result = await client.infer(
            "classifier",
            [tensor],
            outputs=wanted,
            request_compression_algorithm="gzip",
            response_compression_algorithm="deflate",
        )
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities(models, x), rtol=1e-6)
        statistics = await client.get_inference_statistics("classifier", "1")
        assert statistics["model_stats"][0]["version"] == "1"
        index = [{"name": "classifier", "version": "1", "state": "READY", "reason": ""}]
        assert await client.get_model_repository_index() == index
        with pytest.raises(InferenceServerException, match="the cutover operator decides"):
            await client.unload_model("classifier")
    finally:
        await client.close()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        url = gateway_url + "/v2/models/classifier/infer"
        async with session.post(url, data=json_request(200), headers={"Accept-Encoding": "gzip"}) as answer:
            assert answer.status == 200 and answer.headers["Content-Encoding"] == "gzip"
            assert len(json.loads(gzip.decompress(await answer.read()))["outputs"][0]["data"]) == 600


def high_water_mark(process: subprocess.Popen[bytes]) -> int:
    """The most memory ``process`` has held (VmHWM), in bytes."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def test_a_compressed_body_costs_the_server_no_more_than_the_size_limit(models: Path, tmp_path: Path) -> None:
    """4.5 MB of gzip that expands to 1 GiB is a 413 within about the 64 MiB limit of memory;
    aiohttp's own decoding, which expands a whole network read at once, took 430 MB for it."""
    serving = Serving(tmp_path, "--format", "onnx", "--model-uri", str(models / "good.onnx")).start()
    try:
        assert serving.process is not None
        before = high_water_mark(serving.process)
        member = gzip.compress(b"\0" * (64 << 20), compresslevel=1)
        status, _, answer = post_raw(serving.url, member * 16, {"Content-Encoding": "gzip"})  # 16 members: 1 GiB
        assert status == 413 and json.loads(answer)["error"], answer
        assert high_water_mark(serving.process) - before < 4 * (64 << 20)
    finally:
        serving.stop()
