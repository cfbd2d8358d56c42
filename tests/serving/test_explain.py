"""The explain endpoint of `cutover serve` (serving/explain.py), on real processes with real ONNX
and TorchScript models: Shapley values equal a brute-force enumeration of the definition, sampled
ones are additive and reproducible from their seed, neighbours are the nearest exemplars by
Mahalanobis distance, a counterfactual changes the model's class within the declared ranges,
Integrated Gradients run on a model served under inference mode, and bad requests, a busy
endpoint, a timeout and language models get their status with a JSON error, counted apart from
the predictions a rollout's analysis reads."""

from __future__ import annotations

import functools
import http.client
import itertools
import json
import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from scipy.spatial.distance import mahalanobis  # type: ignore[import-untyped,unused-ignore]

from cutover.api.contract import GATEWAY_REQUESTS, REVISION_HEADER
from cutover.serving import sample_models
from cutover.serving.gateway.app import Gateway
from tests.support.waiting import wait_until

from .support import CLASSIFIER_INPUTS, Serving, threaded_gateway

EXEMPLARS = 40
FEATURE_NAMES = ["age", "income", "debt", "tenure"]
PATH = "/v2/models/classifier/explain"


def body(rows: np.ndarray, **parameters: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}],
        "parameters": parameters,
    }


def statistics_with_exemplars(path: Path, models: Path) -> np.ndarray:
    """The sample model's training statistics with EXEMPLARS exemplars (labelled by the good
    model's class) and feature names; returns the exemplar rows."""
    rows = sample_models.sample_inputs(EXEMPLARS, seed=3)
    labels = predict(models / "good.onnx", rows).argmax(axis=1)
    statistics = {
        **sample_models.training_statistics(),
        "features": FEATURE_NAMES,
        "exemplars": {
            "ids": [f"train-{i}" for i in range(EXEMPLARS)],
            "rows": rows.tolist(),
            "labels": [f"class-{c}" for c in labels],
        },
    }
    path.write_text(json.dumps(statistics))
    return rows


def predict(model: Path, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"input": rows.astype(np.float32)})[0]
    return result.astype(np.float64)


def brute_force_shapley(model: Callable[[np.ndarray], np.ndarray], x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Shapley values [M, K] of ``model`` (rows -> [n, K] values) by their definition, subset
    by subset (itertools), against ``background`` rows."""
    features = x.size

    def value(subset: tuple[int, ...]) -> np.ndarray:
        rows = background.copy()
        rows[:, list(subset)] = x[list(subset)]
        mean: np.ndarray = model(rows).mean(axis=0)
        return mean

    phi = np.zeros((features, model(x[None]).shape[1]))
    for i in range(features):
        others = [j for j in range(features) if j != i]
        for size in range(features):
            weight = math.factorial(size) * math.factorial(features - size - 1) / math.factorial(features)
            for subset in itertools.combinations(others, size):
                phi[i] += weight * (value(tuple(sorted((*subset, i)))) - value(subset))
    return phi


def attributions(output: dict[str, Any]) -> np.ndarray:
    return np.array([a["attribution"] for a in output["attributions"]])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for variant in ("good", "shifted", "slow"):
        sample_models.onnx_classifier(folder / f"{variant}.onnx", variant)
    return folder


@pytest.fixture(scope="module")
def exemplar_rows(models: Path) -> np.ndarray:
    return statistics_with_exemplars(models / "statistics.json", models)


def ood(models: Path) -> str:
    return json.dumps({"statisticsUri": str(models / "statistics.json"), "input": "input", "threshold": 4})


@pytest.fixture(scope="module")
def server(models: Path, exemplar_rows: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    workdir = tmp_path_factory.mktemp("serve")
    serving = Serving(
        workdir,
        *("--format", "onnx", "--model-uri", str(models / "good.onnx"), "--inputs", CLASSIFIER_INPUTS),
        *("--ood", ood(models), "--audit-log", str(workdir / "audit.jsonl")),
    ).start()
    yield serving
    assert serving.stop() == 0


def test_exact_shapley_values_equal_the_definition(server: Serving, models: Path, exemplar_rows: np.ndarray) -> None:
    rows = sample_models.sample_inputs(2, seed=11)

    status, answer = server.post(PATH, body(rows, background=EXEMPLARS))

    assert status == 200, answer
    assert [e["row"] for e in answer["explanations"]] == [0, 1]
    for row, explanation in zip(rows, answer["explanations"], strict=True):
        assert explanation["method"] == "shapley_exact"
        assert explanation["background"] == {"rows": EXEMPLARS, "source": "exemplars"}
        assert explanation["model_evaluations"] == 2**4 * EXEMPLARS
        (output,) = explanation["outputs"]
        assert output["name"] == "probabilities"
        assert [a["feature"] for a in output["attributions"]] == FEATURE_NAMES
        assert [a["value"] for a in output["attributions"]] == pytest.approx(row.tolist())
        expected = brute_force_shapley(
            functools.partial(predict, models / "good.onnx"), row.astype(np.float64), exemplar_rows.astype(np.float64)
        )
        np.testing.assert_allclose(attributions(output), expected, atol=1e-6)
        np.testing.assert_allclose(output["prediction"], predict(models / "good.onnx", row[None])[0], atol=1e-6)
        np.testing.assert_allclose(output["baseline"], predict(models / "good.onnx", exemplar_rows).mean(0), atol=1e-6)
        assert np.abs(output["additivity_residual"]).max() < 1e-6
    assert server.metric("cutover_explanation_model_rows_total") >= 2 * 2**4 * EXEMPLARS
    assert server.metric("cutover_explanations_total", method="shapley_exact", code="200") >= 1
    assert server.metric("cutover_predictions_total") == 0  # perturbed rows are no predictions


def test_sampled_shapley_values_are_additive_close_and_reproducible(server: Serving) -> None:
    row = sample_models.sample_inputs(1, seed=12)
    request = body(row, method="shapley_permutation", nsamples=200, seed=42, background=EXEMPLARS)

    first, second = server.post(PATH, request), server.post(PATH, request)
    exact = server.post(PATH, body(row, background=EXEMPLARS))

    assert first[0] == 200, first
    assert first[1]["explanations"] == second[1]["explanations"]  # the seed reproduces it
    (explanation,) = first[1]["explanations"]
    assert (explanation["method"], explanation["seed"], explanation["samples"]) == ("shapley_permutation", 42, 400)
    assert explanation["model_evaluations"] == 400 * 5 * EXEMPLARS
    (output,) = explanation["outputs"]
    assert np.abs(output["additivity_residual"]).max() < 1e-6
    reference = attributions(exact[1]["explanations"][0]["outputs"][0])
    error = np.linalg.norm(attributions(output) - reference) / np.linalg.norm(reference)
    assert error < 0.1


def test_neighbours_are_the_nearest_exemplars_without_their_rows(server: Serving, exemplar_rows: np.ndarray) -> None:
    row = sample_models.sample_inputs(1, seed=13)
    statistics = sample_models.training_statistics()
    precision = np.linalg.inv(np.array(statistics["covariance"]))

    status, answer = server.post(PATH, body(row, neighbours=3))

    assert status == 200, answer
    distances = [mahalanobis(row[0], e, precision) for e in exemplar_rows]
    nearest = np.argsort(distances)[:3]
    neighbours = answer["explanations"][0]["neighbours"]
    assert [n["id"] for n in neighbours] == [f"train-{i}" for i in nearest]
    assert [n["distance"] for n in neighbours] == pytest.approx([distances[i] for i in nearest])
    assert all(set(n) == {"id", "distance", "label"} and n["label"].startswith("class-") for n in neighbours)


def test_a_counterfactual_changes_the_class_within_the_declared_range(server: Serving, models: Path) -> None:
    row = sample_models.sample_inputs(1, seed=14)

    status, answer = server.post(PATH, body(row, counterfactual=True))

    assert status == 200, answer
    found = answer["explanations"][0]["counterfactual"]
    assert found["valid"] and found["class"] != found["counterfactual_class"]
    assert found["class"] == predict(models / "good.onnx", row).argmax()
    changed = row[0].astype(np.float64).copy()
    for change in found["changes"]:
        index = FEATURE_NAMES.index(change["feature"])
        assert change["from"] == pytest.approx(row[0, index])
        changed[index] = change["to"]
    assert found["changes"] and np.all(np.abs(changed) <= 50)
    assert predict(models / "good.onnx", changed[None]).argmax() == found["counterfactual_class"]
    assert found["exemplar"]["id"].startswith("train-") and "row" not in found["exemplar"]


def test_an_explanation_is_audited_on_request_without_its_inputs(server: Serving) -> None:
    row = sample_models.sample_inputs(1, seed=15)
    status, answer = server.post(PATH, {**body(row, audit=True), "id": "explain-audit-1"})
    assert status == 200, answer
    audit = Path(server.log_path.parent / "audit.jsonl")

    def record() -> dict[str, Any] | None:
        lines = audit.read_text().splitlines() if audit.exists() else []
        found = [json.loads(line) for line in lines if "explain-audit-1" in line]
        return found[0] if found else None

    entry = wait_until(record, 10, "the explanation's audit record", 0.05)
    assert entry["type"] == "explanation" and entry["method"] == "shapley_exact"
    assert "inputs" not in entry and "input_digest" not in entry
    assert [t["feature"] for t in entry["outputs"][0]["top"]] and len(entry["outputs"][0]["top"]) == 4


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        (body(np.zeros((1, 5), np.float32)), "shape"),
        (body(np.zeros((0, 4), np.float32)), "shape [0, 4]: no values to explain"),  # was a 500
        (body(np.zeros((2, 4), np.float32), method="lime"), "parameters.method"),
        (body(np.zeros((1, 4), np.float32), nsamples=0), "parameters.nsamples"),
        (body(np.zeros((1, 4), np.float32), neighbours="3"), "parameters.neighbours"),
        (body(np.zeros((1, 4), np.float32), counterfactual="yes"), "parameters.counterfactual"),
        (body(np.zeros((1, 4), np.float32), method="integrated_gradients"), "PyTorch models only"),
        (body(np.zeros((1, 4), np.float32), input="other"), "parameters.input"),
        ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2]}]}, "needs 4 values"),
        (b"{not json", "JSON"),
        (b'{"inputs": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nested too deeply"),
        ({**body(np.zeros((1, 4), np.float32)), "parameters": {"priority": 3}}, "'priority' is not supported"),
    ],
)
def test_bad_explain_requests_are_400_json(server: Serving, request_body: Any, message: str) -> None:
    status, answer = server.post(PATH, request_body)
    assert status == 400, answer
    assert message in answer["error"]


@pytest.mark.usefixtures("exemplar_rows")
def test_busy_and_timed_out_explanations_are_refused_and_counted_apart(models: Path, tmp_path: Path) -> None:
    serving = Serving(
        tmp_path,
        *("--format", "onnx", "--model-uri", str(models / "slow.onnx")),  # no declared range: NaN passes validation
        *("--ood", ood(models), "--explain-timeout", "0.5", "--explain-max-in-flight", "1"),
    ).start()
    try:
        for value in ("NaN", "Infinity"):
            sent = (
                f'{{"inputs": [{{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [{value}, 1, 2, 3]}}]}}'
            )
            status, answer = serving.post(PATH, sent.encode())
            assert status == 400 and "NaN or infinite" in answer["error"], answer
        long_one = body(sample_models.sample_inputs(20, seed=16), method="shapley_permutation", nsamples=1000)
        results: list[tuple[int, Any]] = []
        first = threading.Thread(target=lambda: results.append(serving.post(PATH, long_one)))
        first.start()
        wait_until(lambda: serving.metric("cutover_explanation_in_flight") == 1, 10, "an explanation in progress", 0.01)
        busy = call(serving.url + PATH, body(sample_models.sample_inputs(1)))
        first.join(30)

        assert busy[0] == 503 and busy[1]["Retry-After"] == "1"
        assert "explanations in progress" in busy[2]["error"]
        ((status, answer),) = results
        assert status == 422 and "limit of 0.5 s" in answer["error"], answer
        infer = serving.post("/v2/models/classifier/infer", body(sample_models.sample_inputs(1)))
        assert infer[0] == 200
        assert serving.metric("cutover_explanations_total", code="400") == 2
        assert serving.metric("cutover_explanations_total", code="422") == 1
        assert serving.metric("cutover_explanations_total", code="503") == 1
        assert serving.metric("cutover_serving_requests_total") == 1  # the infer alone
        assert serving.metric("cutover_predictions_total") == 1
    finally:
        serving.stop()


@pytest.mark.usefixtures("exemplar_rows")
def test_an_explanation_its_client_left_stops_and_frees_its_thread(models: Path, tmp_path: Path) -> None:
    """The one explanation thread is not held to the time limit (two minutes here) by a client
    that hung up: the next explanation is answered, and the one abandoned is counted as 499."""
    serving = Serving(
        tmp_path,
        *("--format", "onnx", "--model-uri", str(models / "slow.onnx")),
        *("--ood", ood(models), "--explain-timeout", "120", "--explain-max-in-flight", "1"),
    ).start()
    try:
        long_one = body(sample_models.sample_inputs(500, seed=16), method="shapley_permutation", nsamples=1000)
        connection = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(serving.url).port, timeout=30)
        connection.request("POST", PATH, json.dumps(long_one), {"Content-Type": "application/json"})
        wait_until(lambda: serving.metric("cutover_explanation_in_flight") == 1, 10, "an explanation in progress", 0.01)
        connection.close()  # the client hangs up
        wait_until(lambda: serving.metric("cutover_explanations_total", code="499") == 1, 10, "the 499", 0.01)
        status, _, answer = call(serving.url + PATH, body(sample_models.sample_inputs(1)))
        assert status == 200 and answer["explanations"][0]["row"] == 0, answer
        assert serving.metric("cutover_explanations_total", code="200") == 1
    finally:
        serving.stop()


def call(url: str, request_body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """The status, headers and JSON body of the answer to a POST."""
    request = urllib.request.Request(url, data=json.dumps(request_body).encode(), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def test_explanations_switched_off_are_501(models: Path, tmp_path: Path) -> None:
    serving = Serving(
        tmp_path,
        *("--format", "onnx", "--model-uri", str(models / "good.onnx"), "--inputs", CLASSIFIER_INPUTS),
        "--explain-max-in-flight",
        "0",
    ).start()
    try:
        status, _, answer = call(serving.url + PATH, body(np.zeros((1, 4))))
        assert status == 501
        assert "explanations are off" in answer["error"]
    finally:
        serving.stop()


def test_language_models_are_not_explained(tmp_path: Path) -> None:
    serving = Serving(
        tmp_path, *("--format", "llm", "--upstream", "http://127.0.0.1:9", "--upstream-model", "m"), name="chat"
    ).start(ready=False)
    try:
        status, answer = serving.post("/v2/models/chat/explain", body(np.zeros((1, 4))))
        assert status == 501
        assert "token-level attributions" in answer["error"]
    finally:
        serving.stop()


def test_integrated_gradients_on_a_torchscript_model(tmp_path: Path) -> None:
    pytest.importorskip("captum")
    model = sample_models.torchscript_classifier(tmp_path / "good.pt", "good")
    outputs = json.dumps([{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}])
    statistics = tmp_path / "statistics.json"
    sample_models.write_training_statistics(statistics)
    serving = Serving(
        tmp_path,
        *("--format", "pytorch", "--model-uri", str(model), "--inputs", CLASSIFIER_INPUTS, "--outputs", outputs),
        *("--ood", json.dumps({"statisticsUri": str(statistics), "input": "input", "threshold": 4})),
        *("--explain-timeout", "60"),  # the first explanation waits for Captum's import
    ).start()
    try:
        row = sample_models.sample_inputs(1, seed=17)
        status, answer = serving.post(PATH, body(row, steps=200))
    finally:
        serving.stop()

    assert status == 200, answer
    (explanation,) = answer["explanations"]
    assert (explanation["method"], explanation["steps"]) == ("integrated_gradients", 200)
    assert explanation["background"] == {"rows": 1, "source": "mean"}
    (output,) = explanation["outputs"]
    np.testing.assert_allclose(output["prediction"], predict_torch(model, row), atol=1e-5)
    # Completeness (Sundararajan et al.): the attributions add up to f(x) - f(baseline), up to the
    # Riemann sum's error.
    assert np.abs(output["additivity_residual"]).max() < 1e-3
    assert np.abs(attributions(output)).max() > 1e-3


def predict_torch(model: Path, rows: np.ndarray) -> np.ndarray:
    import torch

    module = torch.jit.load(str(model))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        result: np.ndarray = module(torch.from_numpy(rows)).numpy()[0]
    return result


def test_the_gateway_sends_an_explanation_to_the_revision_that_answered(
    server: Serving, models: Path, tmp_path: Path
) -> None:
    shifted = Serving(
        tmp_path,
        *("--format", "onnx", "--model-uri", str(models / "shifted.onnx"), "--inputs", CLASSIFIER_INPUTS),
        version="2",
    ).start()
    row = body(sample_models.sample_inputs(1, seed=18))
    answered: dict[str, list[float]] = {}
    try:
        with threaded_gateway("classifier", {"rev-1": server.url, "rev-2": shifted.url}) as (url, gateway):

            def both_revisions() -> bool:
                status, headers, answer = call(url + "/v2/models/classifier/infer", row)
                assert status == 200, answer
                answered[headers[REVISION_HEADER]] = answer["outputs"][0]["data"]
                return len(answered) == 2

            wait_until(both_revisions, 30, "answers from both revisions", 0)
            infers = counted(gateway)
            assert infers >= 2
            for revision, probabilities in answered.items():
                status, headers, answer = call(url + PATH, row, {REVISION_HEADER: revision})
                assert status == 200, answer
                assert headers[REVISION_HEADER] == revision
                assert answer["explanations"][0]["outputs"][0]["prediction"] == pytest.approx(probabilities)
            gone = call(url + PATH, row, {REVISION_HEADER: "rev-9"})
            unpinned = call(url + PATH, row)
            assert counted(gateway) == infers  # explanations are not the revisions' traffic
    finally:
        shifted.stop()

    assert answered["rev-1"] != pytest.approx(answered["rev-2"])
    assert gone[0] == 404 and "'rev-9'" in gone[2]["error"] and "rev-1, rev-2" in gone[2]["error"]
    assert unpinned[0] == 200 and unpinned[1][REVISION_HEADER] in answered


def counted(gateway: Gateway) -> float:
    """The gateway's requests per revision, the series the rollout's analysis reads, all summed."""
    return sum(
        sample.value
        for family in gateway.metrics.registry.collect()
        for sample in family.samples
        if sample.name == f"{GATEWAY_REQUESTS.name}_total"
    )


def test_an_output_whose_width_the_model_leaves_free_is_explained(models: Path, tmp_path: Path) -> None:
    import onnx

    graph = onnx.load(str(models / "good.onnx"))
    graph.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"  # [batch, classes]
    onnx.save(graph, str(tmp_path / "free.onnx"))
    serving = Serving(tmp_path, "--format", "onnx", "--model-uri", str(tmp_path / "free.onnx")).start()
    try:
        status, answer = serving.post(PATH, body(sample_models.sample_inputs(1, seed=19)))
    finally:
        serving.stop()

    assert status == 200, answer
    (output,) = answer["explanations"][0]["outputs"]
    assert attributions(output).shape == (4, 3) and len(output["prediction"]) == 3
    assert np.abs(output["additivity_residual"]).max() < 1e-6


def test_one_input_is_explained_with_the_others_held_at_the_request_s_values(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.25], [2.0, 1.5]], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["a", "b"], ["both"], axis=1),
            helper.make_node("MatMul", ["both", "weight"], ["linear"]),
            helper.make_node("Tanh", ["linear"], ["score"]),
        ],
        "two_inputs",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 2]) for name in ("a", "b")],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(tmp_path / "two.onnx"))
    session = ort.InferenceSession(str(tmp_path / "two.onnx"), providers=["CPUExecutionProvider"])
    a, b = np.array([[0.3, -1.2]], np.float32), np.array([[2.0, 0.7]], np.float32)

    def with_b(rows: np.ndarray) -> np.ndarray:
        feed = {"a": rows.astype(np.float32), "b": np.repeat(b, len(rows), axis=0)}
        result: np.ndarray = session.run(None, feed)[0]
        return result.astype(np.float64)

    # Training statistics of input b alone: never the background of a.
    (tmp_path / "b.json").write_text(json.dumps({"mean": [5.0, 5.0], "covariance": [[1.0, 0.0], [0.0, 1.0]]}))
    ood_b = json.dumps({"statisticsUri": str(tmp_path / "b.json"), "input": "b", "threshold": 4})
    serving = Serving(tmp_path, "--format", "onnx", "--model-uri", str(tmp_path / "two.onnx"), "--ood", ood_b).start()
    try:
        tensors = [
            {"name": n, "shape": [1, 2], "datatype": "FP32", "data": v.ravel().tolist()}
            for n, v in (("a", a), ("b", b))
        ]
        status, answer = serving.post(PATH, {"inputs": tensors, "parameters": {"input": "a"}})
        of_b = serving.post(PATH, {"inputs": tensors})  # the outOfDistribution input by default
    finally:
        serving.stop()

    assert status == 200, answer
    (output,) = answer["explanations"][0]["outputs"]
    assert answer["explanations"][0]["background"] == {"rows": 1, "source": "zeros"}
    assert of_b[1]["explanations"][0]["background"] == {"rows": 1, "source": "mean"}
    assert [a["feature"] for a in of_b[1]["explanations"][0]["outputs"][0]["attributions"]] == ["b[0]", "b[1]"]
    expected = brute_force_shapley(with_b, a[0].astype(np.float64), np.zeros((1, 2)))
    np.testing.assert_allclose(attributions(output), expected, atol=1e-6)
