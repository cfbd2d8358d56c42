"""The arithmetic of explanations (serving/attribution.py), without a server: Shapley values
against their definition on a non-linear model, sampled ones additive and converging, deadlines,
the exemplars the statistics file may hold, and counterfactuals that change only what they must."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from cutover.serving.attribution import DeadlineExceeded, Exemplars, counterfactual, exact_shapley, sampled_shapley

from .test_explain import brute_force_shapley

FEATURES = 6
LATER = float("inf")


def model(rows: np.ndarray) -> np.ndarray:
    """A non-linear model of six features with interactions: two values per row."""
    first = np.sin(rows[:, 0]) * rows[:, 1] + rows[:, 2] ** 2 - rows[:, 3] * rows[:, 4] * rows[:, 5]
    second = np.tanh(rows[:, 0] + 2 * rows[:, 5]) + np.maximum(rows[:, 1], rows[:, 3])
    return np.stack([first, second], axis=1)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.standard_normal(FEATURES), rng.standard_normal((5, FEATURES))


def test_exact_values_are_the_definition_and_additive(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, background = data
    found = exact_shapley(model, x, background, LATER)
    np.testing.assert_allclose(found.values, brute_force_shapley(model, x, background), atol=1e-12)
    np.testing.assert_allclose(found.prediction, model(x[None])[0])
    np.testing.assert_allclose(found.baseline, model(background).mean(axis=0))
    assert np.abs(found.residual).max() < 1e-12
    assert found.evaluations == 2**FEATURES * len(background) and found.samples is None


def test_sampled_values_are_additive_reproducible_and_converge(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, background = data
    exact = exact_shapley(model, x, background, LATER).values
    few, again = (sampled_shapley(model, x, background, 5, seed=3, deadline=LATER) for _ in range(2))
    many = sampled_shapley(model, x, background, 2000, seed=3, deadline=LATER)

    np.testing.assert_array_equal(few.values, again.values)
    assert np.abs(few.residual).max() < 1e-12 and np.abs(many.residual).max() < 1e-12
    assert few.samples == 10 and few.evaluations == 10 * (FEATURES + 1) * len(background)
    assert np.linalg.norm(many.values - exact) / np.linalg.norm(exact) < 0.03
    assert np.linalg.norm(many.values - exact) < np.linalg.norm(few.values - exact)


def test_a_passed_deadline_stops_before_the_next_model_call(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, background = data
    with pytest.raises(DeadlineExceeded) as stopped:
        exact_shapley(model, x, background, time.monotonic() - 1)
    assert stopped.value.evaluations == 0


def test_the_memory_of_a_sampled_estimate_does_not_grow_with_its_samples() -> None:
    """nsamples is the client's to choose (up to 1,000 pairs): drawn all at once, the orders'
    coalition masks of a 200-feature input took 80 MB at 1,000 pairs before any deadline check,
    and grow with the square of the features."""
    weights = np.linspace(-1.0, 1.0, 200)
    x, background = np.ones(200), np.zeros((1, 200))
    peaks = []
    for pairs in (100, 1000):
        tracemalloc.start()
        found = sampled_shapley(lambda rows: rows @ weights[:, None], x, background, pairs, seed=3, deadline=LATER)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        np.testing.assert_allclose(found.values[:, 0], weights, atol=1e-12)  # a linear model's are exact
        assert found.evaluations == 2 * pairs * 201
    assert peaks[1] < 1.2 * peaks[0], peaks


PRECISION = np.eye(2)


@pytest.mark.parametrize(
    ("exemplars", "message"),
    [
        ({"ids": ["a"], "rows": [[1.0, 2.0, 3.0]]}, "[N, 2]"),
        ({"ids": ["a", "b"], "rows": [[1.0, 2.0]]}, "one id"),
        ({"ids": ["a"], "rows": [[1.0, 2.0]], "labels": []}, "one id"),
        ({"ids": ["a"], "rows": [[float("nan"), 2.0]]}, "NaN"),
        ({"ids": ["a"], "rows": [["x", 2.0]]}, "numbers"),
        ({"rows": [[1.0, 2.0]]}, "'ids' and 'rows'"),
        ([1, 2], "'ids' and 'rows'"),
    ],
)
def test_malformed_exemplars_fail_with_the_reason(exemplars: object, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        Exemplars.parse({"exemplars": exemplars}, PRECISION)
    assert message in str(refused.value)


def test_neighbours_are_by_mahalanobis_distance() -> None:
    covariance = np.array([[4.0, 0.0], [0.0, 0.25]])
    exemplars = Exemplars.parse(
        {"exemplars": {"ids": ["wide", "narrow"], "rows": [[2.0, 0.0], [0.0, 1.0]], "labels": ["a", "b"]}},
        np.linalg.inv(covariance),
    )
    assert exemplars is not None
    # Two units along the wide feature are one standard deviation; one along the narrow, two.
    assert exemplars.nearest(np.zeros(2), 2) == [
        {"id": "wide", "distance": pytest.approx(1.0), "label": "a"},
        {"id": "narrow", "distance": pytest.approx(2.0), "label": "b"},
    ]


def test_a_counterfactual_changes_only_the_features_the_class_depends_on() -> None:
    def classify(rows: np.ndarray) -> np.ndarray:
        classes: np.ndarray = (rows[:, 0] > 1.0).astype(int)  # only the first feature decides
        return classes

    rows = np.array([[3.0, 5.0, -5.0], [0.5, 0.1, 0.2]])
    exemplars = Exemplars.parse({"exemplars": {"ids": ["high", "low"], "rows": rows.tolist()}}, np.eye(3))
    assert exemplars is not None
    x = np.array([0.0, 0.0, 0.0])

    found = counterfactual(classify, x, exemplars, classify(rows), np.full(3, -10.0), np.full(3, 2.0), ["a", "b", "c"])

    assert found is not None and found["valid"] and (found["class"], found["counterfactual_class"]) == (0, 1)
    assert found["exemplar"]["id"] == "high"
    ((change,),) = [found["changes"]]
    assert change["feature"] == "a" and 1.0 < change["to"] <= 2.0  # within the declared range, near the boundary
    assert counterfactual(classify, x, exemplars, np.zeros(2, int), np.full(3, -10.0), np.full(3, 2.0), "abc") is None
