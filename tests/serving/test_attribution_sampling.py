"""Attribution sampling in `cutover serve` (serving/attribution_sampling.py), on real processes
and real ONNX models: two revisions that rely on different features count their sampled rows
under different top features, rows beyond the queue are dropped and counted while every infer is
answered, sampled explanations are not counted as explain requests, and a server that cannot
sample refuses to start or to load, saying why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cutover.serving.attribution_sampling import top_feature
from tests.support.waiting import wait_until

from .support import Serving, linear_onnx, relying_on

PATH = "/v2/models/classifier/infer"
SAMPLE_ALL = ("--explain-sample-rate", "1")


def infer(serving: Serving, rows: np.ndarray) -> np.ndarray:
    status, answer = serving.post(
        PATH,
        {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]},
    )
    assert status == 200, answer
    return np.asarray(answer["outputs"][0]["data"]).reshape(len(rows), -1)


def sampled(serving: Serving) -> float:
    """Rows sampled so far, once none is queued or being explained (0 before)."""
    if serving.metric("cutover_attribution_samples_pending"):
        return 0
    return serving.metric("cutover_attribution_samples_total")


def test_two_revisions_relying_on_different_features_count_different_top_features(tmp_path: Path) -> None:
    rows = np.random.default_rng(5).normal(3.0, 1.0, (20, 4))
    revisions = [
        Serving(
            tmp_path,
            *("--format", "onnx", "--model-uri", str(relying_on(tmp_path / f"f{feature}.onnx", feature))),
            *("--explain-sample-rate", "1"),
            version=str(feature),
        ).start()
        for feature in (0, 2)
    ]
    try:
        for serving, feature in zip(revisions, (0, 2), strict=True):
            assert infer(serving, rows)[:, 0] == pytest.approx(rows[:, feature], rel=1e-6)
            wait_until(lambda s=serving: sampled(s) >= len(rows), 30, "every row explained")
            assert serving.metric("cutover_attribution_samples_total", outcome="explained") == len(rows)
            assert serving.metric("cutover_attribution_top_feature_total", feature=f"input[{feature}]") == len(rows)
            assert serving.metric("cutover_attribution_top_feature_total") == len(rows)
            # Sampled explanations are no explain requests, and the infer is counted once.
            assert serving.metric("cutover_explanations_total") == 0
            assert serving.metric("cutover_serving_requests_total") == 1
    finally:
        for serving in revisions:
            serving.stop()


def test_rows_beyond_the_queue_are_dropped_and_counted_while_every_row_is_answered(tmp_path: Path) -> None:
    rows = np.random.default_rng(6).normal(0.0, 1.0, (500, 4))
    serving = Serving(
        tmp_path,
        *("--format", "onnx", "--model-uri", str(relying_on(tmp_path / "f1.onnx", 1)), "--explain-sample-rate", "1"),
    ).start()
    try:
        assert infer(serving, rows)[:, 0] == pytest.approx(rows[:, 1], rel=1e-6)
        wait_until(lambda: sampled(serving) >= len(rows), 30, "every row explained or dropped")
        dropped = serving.metric("cutover_attribution_samples_total", outcome="dropped")
        assert dropped > 0
        assert sampled(serving) == len(rows)
        assert serving.metric("cutover_attribution_top_feature_total", feature="input[1]") == len(rows) - dropped
    finally:
        serving.stop()


def test_a_fraction_is_sampled(tmp_path: Path) -> None:
    serving = Serving(
        tmp_path,
        *("--format", "onnx", "--model-uri", str(relying_on(tmp_path / "f3.onnx", 3)), "--explain-sample-rate", "0.1"),
    ).start()
    try:
        for _ in range(10):
            infer(serving, np.ones((50, 4)))
        # 500 rows at 0.1: 50 expected, below 20 or above 80 with a chance under 1e-5 (binomial).
        count = wait_until(lambda: sampled(serving), 30, "the sampled rows explained")
        assert 20 <= count <= 80
        assert serving.metric("cutover_attribution_top_feature_total", feature="input[3]") == count
    finally:
        serving.stop()


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (("--format", "onnx", "--explain-sample-rate", "1.5"), "from 0 to 1"),
        (("--format", "onnx", "--explain-sample-rate", "0.1", "--explain-max-in-flight", "0"), "needs explanations on"),
        (
            ("--format", "llm", "--upstream", "http://127.0.0.1:9", "--upstream-model", "m", *SAMPLE_ALL),
            "cannot be explained here",
        ),
    ],
)
def test_a_server_that_cannot_sample_refuses_to_start(extra: tuple[str, ...], said: str, tmp_path: Path) -> None:
    model = relying_on(tmp_path / "m.onnx", 0)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cutover.operator.cli",
            "serve",
            *("--name", "m", "--version", "1", "--model-uri", str(model)),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert said in run.stderr


@pytest.mark.parametrize("width", [40, "features"])
def test_an_input_too_wide_or_of_free_width_fails_the_load(width: int | str, tmp_path: Path) -> None:
    model = linear_onnx(tmp_path / "wide.onnx", np.ones((40, 1)), features=width)
    serving = Serving(tmp_path, *("--format", "onnx", "--model-uri", str(model), "--explain-sample-rate", "1")).start(
        ready=False
    )
    try:
        status, answer = serving.load_error()
        assert status == 503
        assert "1 to 32 features per row" in str(answer)
    finally:
        serving.stop()


def test_top_feature_is_of_the_predicted_class() -> None:
    explanation = {
        "outputs": [
            {
                "prediction": [0.1, 0.7, 0.2],
                "attributions": [
                    {"feature": "a", "attribution": [5.0, 0.1, 0.0]},
                    {"feature": "b", "attribution": [0.0, -0.3, 9.0]},
                    {"feature": "c", "attribution": [0.0, 0.2, 0.0]},
                ],
            }
        ]
    }
    assert top_feature(explanation) == "b"  # class 1's largest |attribution|, not the row's largest
    flat = {"outputs": [{"prediction": [1.0], "attributions": [{"feature": "a", "attribution": [0.0]}]}]}
    assert top_feature(flat) is None
