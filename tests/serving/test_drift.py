"""Input drift series (issue 20, item 4): the training statistics' ``histograms`` are checked
at load, and `cutover serve` counts each scored row's features per bin of the training edges
(Prometheus' ``le`` convention) beside the training shares the analysis compares them with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cutover.analysis.drift import population_stability_index
from cutover.api.contract import INPUT_DRIFT_MAX_FEATURES
from cutover.serving import sample_models
from cutover.serving.drift import InputBinning

from .support import CLASSIFIER_INPUTS, Serving

EDGES = [-1.0, 0.0, 1.0]
SHARES = [0.2, 0.3, 0.3, 0.2]


def binning(edges: list[Any], proportions: list[Any], names: tuple[str, ...] = ()) -> InputBinning | None:
    statistics = {"histograms": {"edges": edges, "proportions": proportions}}
    return InputBinning.parse(statistics, names, len(edges))


def test_a_value_on_an_edge_is_in_the_lower_bin_and_nan_in_none() -> None:
    parsed = binning([EDGES, None], [SHARES, None], ("age", "zip"))
    assert parsed is not None and [f.name for f in parsed.features] == ["age"]
    rows = np.array([[-1.0, 5], [-0.5, 5], [0.0, 5], [np.inf, 5], [-np.inf, 5], [np.nan, 5], [2.0, 5]])
    [(feature, counts)] = parsed.counts(rows)
    assert feature.proportions == tuple(SHARES)
    assert counts.tolist() == [2, 2, 0, 2]


def test_features_without_names_are_labelled_by_column() -> None:
    parsed = binning([None, EDGES], [None, SHARES])
    assert parsed is not None and [(f.name, f.column) for f in parsed.features] == [("1", 1)]


@pytest.mark.parametrize(
    ("edges", "proportions", "said"),
    [
        ([[0.0, 0.0]], [[0.5, 0.0, 0.5]], "strictly increasing"),
        ([[0.0, float("nan")]], [[0.5, 0.0, 0.5]], "strictly increasing"),
        ([EDGES], [[0.5, 0.5, 0.5, 0.5]], "sum to 1, got sum 2"),
        ([EDGES], [[1.2, -0.2, 0.0, 0.0]], "non-negative"),
        ([EDGES], [[0.5, 0.5]], "3 edges make 4 bins, not 2"),
        ([list(range(10))], [[0.1] * 11], "1 to 9 numbers"),
        ([["a"]], [[0.5, 0.5]], "lists of numbers"),
    ],
)
def test_bad_histograms_say_what_is_wrong(edges: list[Any], proportions: list[Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        binning(edges, proportions)


def test_two_watched_features_of_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match=r"names \['age'\] more than once"):
        binning([EDGES, EDGES], [SHARES, SHARES], ("age", "age"))
    assert binning([EDGES, None], [SHARES, None], ("age", "age")) is not None  # one of them watched


def test_the_feature_count_and_the_series_bound_are_checked() -> None:
    with pytest.raises(ValueError, match="the training statistics have 3 features"):
        InputBinning.parse({"histograms": {"edges": [EDGES], "proportions": [SHARES]}}, (), 3)
    many = INPUT_DRIFT_MAX_FEATURES + 1
    with pytest.raises(ValueError, match=f"watches {many} features; at most {INPUT_DRIFT_MAX_FEATURES}"):
        binning([EDGES] * many, [SHARES] * many)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    folder = tmp_path_factory.mktemp("models")
    sample_models.onnx_classifier(folder / "good.onnx", "good")
    statistics = sample_models.write_training_statistics(folder / "statistics.json")
    ood = json.dumps({"statisticsUri": str(statistics), "input": "input", "threshold": 4})
    serving = Serving(
        tmp_path_factory.mktemp("serve"),
        *("--format", "onnx", "--model-uri", str(folder / "good.onnx"), "--inputs", CLASSIFIER_INPUTS),
        *("--ood", ood),
    ).start()
    yield serving
    assert serving.stop() == 0


def per_bin(server: Serving, name: str, feature: int) -> list[float]:
    return [server.metric(name, feature=str(feature), bin=str(b), revision="rev-1") for b in range(10)]


def test_served_rows_are_counted_per_bin_of_the_training_deciles(server: Serving) -> None:
    moved = sample_models.sample_inputs(400, seed=21, shift=2.0)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [400, 4], "data": moved.ravel().tolist()}]}
    assert server.post("/v2/models/classifier/infer", body)[0] == 200
    histograms = sample_models.training_statistics()["histograms"]
    for feature in range(sample_models.FEATURES):
        edges = np.array(histograms["edges"][feature])
        expected = np.bincount(np.searchsorted(edges, moved[:, feature].astype(np.float64)), minlength=10)
        counted = per_bin(server, "cutover_input_feature_rows_total", feature)
        assert counted == expected.tolist()
        assert per_bin(server, "cutover_input_feature_reference", feature) == [0.1] * 10
        assert population_stability_index(counted, [0.1] * 10) > 0.2  # two Mahalanobis units away
