"""Input drift (issue 20, item 4): the population stability index and the binned
Kolmogorov-Smirnov test against scipy on the same data, the Bonferroni correction over
features and looks, and the ``inputDrift`` builtin read from serving's per-bin series through
the analysis engine; the API refuses it without a limit or training statistics."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from scipy import stats

from cutover.analysis import Analysis, Arms, Result
from cutover.analysis.drift import FeatureCounts, InputDriftJudge, binned_ks, population_stability_index
from cutover.analysis.judges import JudgeSettings
from cutover.api.v1alpha1 import ModelDeployment
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec, MetricSpec

from ..cases import CANARY, load
from .fakes import FakeProvider

CAND, BASE = "c0ffee00", "ba5e1111"
ROWS = "cutover_input_feature_rows_total"
REFERENCE = 'cutover_input_feature_reference{namespace="shop",model="ranker",revision=~"ba5e1111|c0ffee00"}'
DRIFT = {"name": "drift", "builtin": "inputDrift", "thresholdRange": {"max": 0.2}}
DECILES = stats.norm.ppf(np.arange(1, 10) / 10)
"""Edges of ten equally likely bins of a standard normal feature."""


def counts(values: np.ndarray) -> np.ndarray:
    """Rows per bin of ``DECILES``, as serving bins them (a value on an edge is in the lower bin)."""
    return np.bincount(np.searchsorted(DECILES, values, side="left"), minlength=10)


def test_the_psi_is_the_symmetrised_kullback_leibler_divergence_of_scipy() -> None:
    reference = np.array([0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05])
    live = np.array([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.1])
    rows = live * 1e7  # the smoothing of empty bins is negligible at this size
    expected = stats.entropy(live, reference) + stats.entropy(reference, live)
    assert population_stability_index(rows, reference) == pytest.approx(expected, rel=1e-5)
    assert population_stability_index(reference * 1e7, reference) == pytest.approx(0.0, abs=1e-9)


def test_an_empty_bin_gives_a_finite_psi() -> None:
    psi = population_stability_index([0, 0, 500, 500], [0.25, 0.25, 0.25, 0.25])
    assert np.isfinite(psi) and psi > 1.0


@pytest.mark.parametrize("shift", [0.0, 0.15, 0.5])
def test_the_binned_ks_test_is_scipys_on_the_binned_sample_and_never_less_conservative(shift: float) -> None:
    values = np.random.default_rng(3).normal(loc=shift, size=800)
    statistic, p = binned_ks(counts(values), [0.1] * 10)
    # Every value moved to its bin's upper edge: its empirical CDF at the edges is the binned one.
    at_edges = np.append(DECILES, 10.0)[np.searchsorted(DECILES, values, side="left")]
    ecdf_at_edges = np.array([(at_edges <= e).mean() for e in DECILES])
    assert statistic == pytest.approx(np.abs(ecdf_at_edges - np.arange(1, 10) / 10).max())
    raw = stats.ks_1samp(values, stats.norm.cdf, method="exact")
    assert statistic <= raw.statistic + 1e-12
    assert p >= raw.pvalue - 1e-12
    assert p == pytest.approx(stats.kstwo.sf(statistic, 800))


def settings(alpha: float = 0.05, limit: float | None = 0.2) -> JudgeSettings:
    return JudgeSettings(alpha=alpha, alpha_share=alpha, threshold_max=limit)


def test_no_drift_over_many_features_and_looks_rarely_fails() -> None:
    """Ten features read over ten intervals: uncorrected, ten KS tests per look would flag some
    feature in most analyses at 5%; with the correction at most one in twenty (with the PSI limit
    off, the KS test alone decides)."""
    rng = np.random.default_rng(11)
    failed = 0
    for _ in range(40):
        judge = InputDriftJudge("drift", settings(limit=0.0))
        for _ in range(10):
            read = {str(f): tuple(counts(rng.normal(size=100))) for f in range(10)}
            judge.update_features(*[_features(read)] * 2)
            if judge.evidence(100).decision == "fail":
                failed += 1
                break
    assert failed <= 2


def test_a_moved_feature_fails_and_is_named() -> None:
    judge = InputDriftJudge("drift", settings())
    rng = np.random.default_rng(12)
    read = {"age": tuple(counts(rng.normal(size=2000))), "income": tuple(counts(rng.normal(loc=0.8, size=2000)))}
    judge.update_features(_features(read), _features({"age": read["age"], "income": read["age"]}))
    evidence = judge.evidence(100)
    assert evidence.decision == "fail"
    assert "'income'" in evidence.reason and "'age' (PSI" not in evidence.reason
    assert evidence.estimate is not None and evidence.estimate > 0.2


def test_a_small_shift_within_the_psi_limit_passes_however_significant() -> None:
    judge = InputDriftJudge("drift", settings())
    read = {"age": tuple(counts(np.random.default_rng(13).normal(loc=0.1, size=50_000)))}
    judge.update_features(_features(read), _features(read))
    assert binned_ks(read["age"], [0.1] * 10)[1] < 1e-6
    assert judge.evidence(100).decision == "pass"


def _features(rows: dict[str, tuple[float, ...]]) -> FeatureCounts:
    return FeatureCounts(rows, {feature: (0.1,) * 10 for feature in rows})


def analysis(*metrics: dict[str, Any]) -> Analysis:
    spec = AnalysisSpec.model_validate(
        {"interval": "30s", "minDuration": "30s", "minSamples": 100, "metrics": list(metrics)}
    )
    return Analysis(spec, namespace="shop", model="ranker", arms=Arms(CAND, BASE), started_at=0.0)


def tick(a: Analysis, provider: FakeProvider, now: float) -> Result:
    return asyncio.run(a.tick(provider, now))


def served(provider: FakeProvider, revision: str, features: dict[str, np.ndarray], reference: float = 0.1) -> None:
    """One interval of ``revision``'s binned rows per feature, and its training shares."""
    rows = provider.series.setdefault(ROWS, [])
    shares = provider.vectors.setdefault(REFERENCE, {})
    for feature, values in features.items():
        for index, count in enumerate(counts(values)):
            rows.append(({"revision": revision, "feature": feature, "bin": str(index)}, float(count)))
            shares[(("revision", revision), ("feature", feature), ("bin", str(index)))] = reference


def test_a_candidate_seeing_drifted_inputs_is_rolled_back_and_a_steady_one_promoted() -> None:
    rng = np.random.default_rng(14)
    drifted, steady = analysis({**DRIFT, "critical": True}), analysis(DRIFT)
    moved, same = FakeProvider(), FakeProvider()
    served(moved, CAND, {"age": rng.normal(loc=1.0, size=300), "income": rng.normal(size=300)})
    served(moved, BASE, {"age": rng.normal(size=300), "income": rng.normal(size=300)})
    for revision in (CAND, BASE):
        served(same, revision, {"age": rng.normal(size=300), "income": rng.normal(size=300)})

    rollback = tick(drifted, moved, 30.0)
    assert rollback.verdict == "rollback" and "'age'" in rollback.reason
    assert rollback.evidence[0].candidate_samples == 300
    assert tick(steady, same, 30.0).verdict == "promote"


def test_a_candidate_is_judged_when_the_baseline_has_no_histograms() -> None:
    """A stable revision whose training statistics predate histograms exports no drift series:
    the candidate is judged against its own training data all the same, rolled back or
    promoted, not held at unavailable or waiting for the baseline's rows."""
    rng = np.random.default_rng(15)
    drifted, steady = analysis(DRIFT), analysis(DRIFT)
    moved, same = FakeProvider(), FakeProvider()
    served(moved, CAND, {"age": rng.normal(loc=1.0, size=300)})
    served(same, CAND, {"age": rng.normal(size=300)})
    rollback = tick(drifted, moved, 30.0)
    assert rollback.verdict == "rollback" and "'age'" in rollback.reason
    assert "baseline no feature read" in rollback.reason
    assert tick(steady, same, 30.0).verdict == "promote"


def test_a_revision_without_training_shares_is_unavailable_not_judged() -> None:
    a = analysis(DRIFT)
    provider = FakeProvider()
    served(provider, CAND, {"age": np.zeros(200)})
    served(provider, BASE, {"age": np.zeros(200)})
    provider.vectors[REFERENCE] = {k: v for k, v in provider.vectors[REFERENCE].items() if k[0][1] == BASE}
    result = tick(a, provider, 30.0)
    assert result.verdict == "unavailable"
    assert "cutover_input_feature_reference for revision c0ffee00" in result.reason
    assert "histograms" in result.reason


def test_bins_without_their_training_share_are_unavailable() -> None:
    a = analysis(DRIFT)
    provider = FakeProvider()
    for revision in (CAND, BASE):
        served(provider, revision, {"age": np.zeros(200)})
    del provider.vectors[REFERENCE][(("revision", CAND), ("feature", "age"), ("bin", "9"))]
    result = tick(a, provider, 30.0)
    assert result.verdict == "unavailable" and "feature 'age' has bins" in result.reason


def test_the_api_wants_a_psi_limit_and_training_statistics() -> None:
    with pytest.raises(ValueError, match="inputDrift is judged against a limit"):
        MetricSpec.model_validate({"name": "drift", "builtin": "inputDrift"})
    body = load(CANARY)
    body["spec"]["analysis"]["metrics"].append(DRIFT)
    ModelDeployment.model_validate(body)
    del body["spec"]["model"]["outOfDistribution"]
    with pytest.raises(ValueError, match="inputDrift compares the inputs with the training statistics"):
        ModelDeployment.model_validate(body)
