"""Out-of-distribution scorers shipped as extra ONNX models (issue 20, item 5): an isolation
forest trained by scikit-learn and converted by skl2onnx, and a torch autoencoder exported with
``torch.onnx.export``, scored in onnxruntime to the numbers their own libraries give, refused at
load when they cannot score the input, selected by ``model.outOfDistribution.method`` and
counted by `cutover serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skl2onnx import to_onnx  # type: ignore[import-untyped]
from sklearn.ensemble import IsolationForest

from cutover.api.v1alpha1.modeldeployment import OutOfDistribution
from cutover.serving import sample_models
from cutover.serving.ood import OnnxScorer, ScorerError, training_threshold

from .support import CLASSIFIER_INPUTS, Serving

torch = pytest.importorskip("torch")
OPSETS = {"": 17, "ai.onnx.ml": 3}


@pytest.fixture(scope="module")
def training() -> np.ndarray:
    return sample_models.sample_inputs(2000, seed=31).astype(np.float64)


@pytest.fixture(scope="module")
def forest(training: np.ndarray) -> IsolationForest:
    return IsolationForest(n_estimators=60, random_state=0).fit(training)


@pytest.fixture(scope="module")
def forest_file(forest: IsolationForest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_forest(forest, tmp_path_factory.mktemp("forest") / "forest.onnx"))


@pytest.fixture(scope="module")
def autoencoder_file(autoencoder: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_autoencoder(autoencoder, tmp_path_factory.mktemp("autoencoder") / "ae.onnx"))


def write_forest(forest: IsolationForest, path: Path) -> Path:
    path.write_bytes(to_onnx(forest, np.zeros((1, 4), np.float32), target_opset=OPSETS).SerializeToString())
    return path


def write_autoencoder(module: Any, path: Path, features: int = 4, *, free_batch: bool = True) -> Path:
    torch.onnx.export(
        module,
        (torch.zeros(1, features),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["reconstruction"],
        dynamic_axes={"x": {0: "batch"}, "reconstruction": {0: "batch"}} if free_batch else None,
    )
    return path


@pytest.fixture(scope="module")
def autoencoder(training: np.ndarray) -> Any:
    """4 -> 2 -> 4, trained on the training rows (which are correlated, so two dimensions hold
    most of them)."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh(), torch.nn.Linear(2, 4))
    rows = torch.from_numpy(training[:500].astype(np.float32))
    optimiser = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(150):
        optimiser.zero_grad()
        loss = ((module(rows) - rows) ** 2).mean()
        loss.backward()
        optimiser.step()
    return module.eval()


def far_rows() -> np.ndarray:
    return sample_models.sample_inputs(50, seed=32, shift=8.0).astype(np.float64)


def test_the_isolation_forest_scores_the_papers_anomaly_score_as_sklearn(
    forest: IsolationForest, forest_file: str, training: np.ndarray
) -> None:
    scorer = OnnxScorer(forest_file, "isolationForest", 4)
    rows = np.vstack([training[:50], far_rows()]).astype(np.float32).astype(np.float64)
    scores = scorer.score(rows)
    # contamination="auto": 0.5 - decision_function is -score_samples, Liu et al.'s s(x).
    np.testing.assert_allclose(scores, -forest.score_samples(rows), atol=1e-5)
    assert np.median(scores[:50]) < 0.5 < scores[50:].min()


def test_the_autoencoder_scores_its_reconstruction_error_as_torch(
    autoencoder: Any, autoencoder_file: str, training: np.ndarray
) -> None:
    scorer = OnnxScorer(autoencoder_file, "autoencoder", 4)
    rows = np.vstack([training[:50], far_rows()])
    with torch.no_grad():
        x = torch.from_numpy(rows.astype(np.float32))
        expected = ((autoencoder(x) - x) ** 2).mean(dim=1).numpy()
    scores = scorer.score(rows)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
    assert np.median(scores[50:]) > 10 * np.median(scores[:50])


def test_rows_with_nan_score_nan_and_another_width_is_a_scorer_error(forest_file: str) -> None:
    scorer = OnnxScorer(forest_file, "isolationForest", 4)
    scores = scorer.score(np.array([[0.0, 1.0, -2.0, 0.5], [np.nan, 1.0, -2.0, 0.5]]))
    assert np.isfinite(scores[0]) and np.isnan(scores[1])
    with pytest.raises(ScorerError, match="input has 5 features per row"):
        scorer.score(np.zeros((2, 5)))


def test_models_that_cannot_score_the_input_are_refused_at_load(
    forest_file: str, autoencoder_file: str, tmp_path: Path
) -> None:
    narrow = str(write_autoencoder(torch.nn.Linear(3, 3), tmp_path / "narrow.onnx", features=3))
    one_row = str(write_autoencoder(torch.nn.Linear(4, 4), tmp_path / "one-row.onnx", free_batch=False))
    with pytest.raises(ValueError, match=r"cannot load the isolationForest model .*missing\.onnx"):
        OnnxScorer(str(tmp_path / "missing.onnx"), "isolationForest", 4)
    with pytest.raises(ValueError, match=r"has outputs \['reconstruction'\], not 'scores'"):
        OnnxScorer(autoencoder_file, "isolationForest", 4)
    with pytest.raises(ValueError, match="must have one output"):
        OnnxScorer(forest_file, "autoencoder", 4)
    with pytest.raises(ValueError, match="does not score a batch of rows of 4 features"):
        OnnxScorer(narrow, "autoencoder", 4)
    with pytest.raises(ValueError, match="its batch dimension must be free"):  # it scored one row, then failed
        OnnxScorer(one_row, "autoencoder", 4)  # every request of more than one row in the hot path


def test_a_threshold_can_come_with_the_training_statistics() -> None:
    assert training_threshold({"thresholds": {"autoencoder": 0.013}}, "autoencoder") == 0.013
    for statistics in ({}, {"thresholds": {"isolationForest": 0.6}}, {"thresholds": {"autoencoder": -1}}):
        with pytest.raises(ValueError, match=r"set outOfDistribution\.threshold, or 'thresholds'"):
            training_threshold(statistics, "autoencoder")


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"method": "isolationForest"}, r"modelUri .* is required for methods isolationForest"),
        ({"modelUri": "forest.onnx"}, "not allowed for mahalanobis"),
        ({"method": "autoencoder", "modelUri": "https://models.example/ae.onnx"}, "a file in the serving pod"),
    ],
)
def test_the_api_refuses_a_method_without_its_model(spec: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        OutOfDistribution.model_validate({"statisticsUri": "stats.json", "input": "input", "threshold": 1} | spec)


@pytest.fixture(scope="module")
def forest_server(forest_file: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    folder = tmp_path_factory.mktemp("models")
    sample_models.onnx_classifier(folder / "good.onnx", "good")
    statistics = sample_models.training_statistics() | {"thresholds": {"isolationForest": 0.6}}
    (folder / "statistics.json").write_text(json.dumps(statistics))
    (folder / "forest.onnx").write_bytes(Path(forest_file).read_bytes())
    ood = {  # no threshold: the statistics' for the method
        "statisticsUri": "statistics.json",
        "input": "input",
        "method": "isolationForest",
        "modelUri": "forest.onnx",  # beside the model, as the statistics are
    }
    serving = Serving(
        tmp_path_factory.mktemp("serve"),
        *("--format", "onnx", "--model-uri", str(folder / "good.onnx"), "--inputs", CLASSIFIER_INPUTS),
        *("--ood", json.dumps(ood)),
    ).start()
    yield serving
    assert serving.stop() == 0


def test_cutover_serve_counts_rows_the_forest_isolates(forest_server: Serving, forest: IsolationForest) -> None:
    near = sample_models.sample_inputs(20, seed=33)
    far = sample_models.sample_inputs(10, seed=34, shift=8.0)
    rows = np.vstack([near, far])
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [30, 4], "data": rows.ravel().tolist()}]}
    assert forest_server.post("/v2/models/classifier/infer", body)[0] == 200
    expected = int((-forest.score_samples(rows.astype(np.float64)) > 0.6).sum())
    assert expected >= 10
    assert forest_server.metric("cutover_out_of_distribution_total") == expected
