"""Out-of-distribution scoring: distances equal scipy's Mahalanobis distance, singular and
precision statistics, flattening, and statistics loaded from a file and over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis  # type: ignore[import-untyped,unused-ignore]

from cutover.serving.ood import MahalanobisScorer, ScorerError, load_statistics

from .support import threaded_http_server


@pytest.fixture
def training() -> np.ndarray:
    rng = np.random.default_rng(7)
    mixing = rng.normal(size=(4, 4))
    data: np.ndarray = rng.normal(size=(500, 4)) @ mixing + np.array([1.0, -2.0, 0.5, 10.0])
    return data


def statistics_of(data: np.ndarray) -> dict[str, Any]:
    return {"mean": data.mean(axis=0).tolist(), "covariance": np.cov(data, rowvar=False).tolist()}


def test_distances_match_scipy(training: np.ndarray) -> None:
    statistics = statistics_of(training)
    rows = np.random.default_rng(8).normal(size=(20, 4)) * 3
    precision = np.linalg.inv(np.array(statistics["covariance"]))

    scores = MahalanobisScorer(statistics).score(rows)

    expected = [mahalanobis(row, statistics["mean"], precision) for row in rows]
    np.testing.assert_allclose(scores, expected, rtol=1e-9)
    assert scores.shape == (20,)


def test_the_precision_form_scores_the_same(training: np.ndarray) -> None:
    statistics = statistics_of(training)
    precision = np.linalg.inv(np.array(statistics["covariance"])).tolist()
    rows = training[:10]

    from_precision = MahalanobisScorer({"mean": statistics["mean"], "precision": precision}).score(rows)

    np.testing.assert_allclose(from_precision, MahalanobisScorer(statistics).score(rows), rtol=1e-9)


def test_the_training_mean_scores_zero_and_far_rows_score_high(training: np.ndarray) -> None:
    scorer = MahalanobisScorer(statistics_of(training))
    mean = training.mean(axis=0)
    scores = scorer.score(np.stack([mean, mean + 100 * training.std(axis=0)]))
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert scores[1] > 50


def test_a_singular_covariance_still_scores(training: np.ndarray) -> None:
    # A constant feature: its variance is zero and the covariance has no inverse.
    data = np.column_stack([training[:, :2], np.full(len(training), 3.0)])
    scorer = MahalanobisScorer(statistics_of(data))

    usual = data[:5]
    scores = scorer.score(usual)
    precision = np.linalg.inv(np.cov(data[:, :2], rowvar=False))
    expected = [mahalanobis(row[:2], data[:, :2].mean(axis=0), precision) for row in usual]
    np.testing.assert_allclose(scores, expected, rtol=1e-4)

    moved = usual[0] + np.array([0.0, 0.0, 1.0])
    assert scorer.score(moved[np.newaxis])[0] > 100 * scores[0]
    assert np.isfinite(scores).all()


def test_higher_rank_inputs_are_flattened_per_row() -> None:
    rng = np.random.default_rng(9)
    data = rng.normal(size=(300, 6))
    scorer = MahalanobisScorer(statistics_of(data))
    images = rng.normal(size=(4, 2, 3))

    np.testing.assert_allclose(scorer.score(images), scorer.score(images.reshape(4, 6)))
    np.testing.assert_allclose(scorer.score(images[0].reshape(-1)), scorer.score(images[:1].reshape(1, 6)))


def test_a_feature_count_mismatch_is_a_scorer_error(training: np.ndarray) -> None:
    scorer = MahalanobisScorer(statistics_of(training))
    with pytest.raises(ScorerError, match="input has 5 features per row; the training statistics describe 4"):
        scorer.score(np.zeros((2, 5)))


@pytest.mark.parametrize(
    ("statistics", "message"),
    [
        ({"covariance": [[1.0]]}, "need a 'mean'"),
        ({"mean": [0.0, 0.0]}, "'covariance' or a 'precision'"),
        ({"mean": [], "covariance": []}, "non-empty"),
        (
            {"mean": [0.0, 0.0], "covariance": [[1.0, 0.0]]},
            r"'covariance' must be 2x2 to match 'mean', got shape \[1, 2\]",
        ),
        ({"mean": [0.0, 0.0], "precision": [[1.0, 0.5], [0.0, 1.0]]}, "'precision' must be symmetric"),
        ({"mean": [0.0, 0.0], "covariance": [[1.0, 2.0], [2.0, 1.0]]}, "positive semi-definite"),
        ({"mean": [0.0, "x"], "covariance": [[1.0, 0.0], [0.0, 1.0]]}, "'mean' must hold numbers"),
        ({"mean": [0.0, float("nan")], "covariance": [[1.0, 0.0], [0.0, 1.0]]}, "NaN"),
    ],
)
def test_bad_statistics_say_what_is_wrong(statistics: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MahalanobisScorer(statistics)


def test_load_statistics_from_a_path_and_a_file_uri(tmp_path: Path, training: np.ndarray) -> None:
    path = tmp_path / "statistics.json"
    path.write_text(json.dumps(statistics_of(training)))

    assert load_statistics(str(path)) == statistics_of(training)
    assert load_statistics(path.as_uri()) == statistics_of(training)


def test_load_statistics_errors_name_the_uri(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"cannot read out-of-distribution statistics .*missing\.json"):
        load_statistics(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="must be a JSON object"):
        load_statistics(str(tmp_path / "list.json"))
    with pytest.raises(ValueError, match="are not JSON"):
        load_statistics(str(tmp_path / "broken.json"))
    with pytest.raises(ValueError, match="s3:// is not supported"):
        load_statistics("s3://bucket/statistics.json")


@pytest.fixture
def http_server() -> Iterator[str]:
    body = json.dumps({"mean": [0.0, 1.0], "covariance": [[1.0, 0.0], [0.0, 4.0]]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/statistics.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with threaded_http_server(Handler) as url:
        yield url


def test_load_statistics_over_http(http_server: str) -> None:
    statistics = load_statistics(f"{http_server}/statistics.json")
    assert MahalanobisScorer(statistics).score(np.array([[0.0, 5.0]]))[0] == pytest.approx(2.0)


def test_load_statistics_over_http_reports_the_status(http_server: str) -> None:
    with pytest.raises(ValueError, match=r"cannot fetch out-of-distribution statistics from .*/missing.json: .*404"):
        load_statistics(f"{http_server}/missing.json")
