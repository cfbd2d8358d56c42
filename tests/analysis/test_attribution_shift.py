"""Attribution shift (issue 20, item 4): the candidate's most attributed features against the
stable revision's, by total variation distance and Pearson's chi-square test of homogeneity,
checked against scipy on the same tables, with the alpha split over looks."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from scipy import stats

from cutover.analysis import Analysis, Arms, Result
from cutover.analysis.attribution import AttributionShiftJudge, homogeneity, total_variation
from cutover.analysis.judges import JudgeSettings
from cutover.api.v1alpha1 import ModelDeployment
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec

from ..cases import CANARY, load
from .fakes import FakeProvider

SETTINGS = JudgeSettings(alpha=0.05, alpha_share=0.05, threshold_max=0.2)
CAND, BASE = "c0ffee00", "ba5e1111"
TOP = "cutover_attribution_top_feature_total"
SHIFT = {"name": "reasons", "builtin": "attributionShift", "thresholdRange": {"max": 0.2}}


def by_feature(counts: np.ndarray) -> dict[str, float]:
    """Counts of features a, b, c, ... as an interval's reading."""
    return dict(zip("abcdefgh", counts.tolist(), strict=False))


@pytest.mark.parametrize(
    ("candidate", "baseline"),
    [
        ([30, 10, 5, 0], [12, 25, 8, 0]),  # a feature neither counted is left out of the degrees of freedom
        ([100, 1, 1], [98, 2, 3]),
        ([7, 0, 3, 9], [0, 4, 3, 11]),
    ],
)
def test_the_chi_square_is_scipy_s_test_of_homogeneity(candidate: list[int], baseline: list[int]) -> None:
    table = np.array([candidate, baseline])
    table = table[:, table.sum(axis=0) > 0]
    expected = stats.chi2_contingency(table, correction=False)
    assert homogeneity(candidate, baseline) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-9)


def test_the_total_variation_is_half_the_l1_distance_of_the_shares() -> None:
    assert total_variation([3, 1], [1, 3]) == pytest.approx(0.5)
    assert total_variation([5, 0], [0, 7]) == 1.0
    assert total_variation([2, 2], [50, 50]) == 0.0
    assert total_variation([0, 0], [1, 2]) == 0.0  # no rows: no evidence of a shift


def test_one_feature_or_an_empty_arm_tests_nothing() -> None:
    assert homogeneity([10, 0], [20, 0]) == (0.0, 1.0)
    assert homogeneity([0, 0], [3, 4]) == (0.0, 1.0)
    with pytest.raises(ValueError):
        total_variation([1, 2], [1, 2, 3])


def test_a_candidate_relying_on_another_feature_fails_and_the_same_reliance_passes() -> None:
    shifted = AttributionShiftJudge("shift", SETTINGS)
    shifted.update_top_features({"income": 15, "age": 5}, {"age": 18, "income": 2})
    verdict = shifted.evidence(min_samples=20)
    assert verdict.decision == "fail"
    assert "candidate 'income', baseline 'age'" in verdict.reason
    assert verdict.estimate == pytest.approx(0.65)

    same = AttributionShiftJudge("shift", SETTINGS)
    rng = np.random.default_rng(1)
    for _ in range(5):
        c, b = rng.multinomial(40, [0.6, 0.3, 0.1]), rng.multinomial(40, [0.6, 0.3, 0.1])
        same.update_top_features(by_feature(c), by_feature(b))
    assert same.evidence(min_samples=100).decision == "pass"
    assert same.evidence(min_samples=1000).decision == "inconclusive"


def test_a_significant_shift_below_the_limit_does_not_fail() -> None:
    judge = AttributionShiftJudge("shift", SETTINGS)
    judge.update_top_features({"a": 5500, "b": 4500}, {"a": 5000, "b": 5000})  # TV 0.05, p far below any level
    assert homogeneity([5500, 4500], [5000, 5000])[1] < 1e-9
    assert judge.evidence(min_samples=100).decision == "pass"


def test_each_look_spends_its_share_of_alpha() -> None:
    judge = AttributionShiftJudge("shift", SETTINGS)
    levels = []
    for _ in range(50):
        judge.update_top_features({"a": 1}, {"a": 1})
        levels.append(judge.level())
    assert levels[:2] == pytest.approx([0.05 / 2, 0.05 / 6])
    assert sum(levels) < SETTINGS.alpha_share


def test_under_no_shift_the_repeated_looks_fail_rarely() -> None:
    """Both arms drawn from one distribution, read every interval for 10 looks, 400 rollouts:
    the share that ever fails stays within the alpha share (0.05), with sampling error."""
    rng = np.random.default_rng(7)
    shares = [0.4, 0.3, 0.2, 0.1]
    failed = 0
    for _ in range(400):
        judge = AttributionShiftJudge("shift", JudgeSettings(alpha=0.05, alpha_share=0.05, threshold_max=0.0))
        for _ in range(10):
            c, b = rng.multinomial(20, shares), rng.multinomial(20, shares)
            judge.update_top_features(by_feature(c), by_feature(b))
            if judge.evidence(min_samples=10**6).decision == "fail":
                failed += 1
                break
    assert failed / 400 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 400)


def analysis(*metrics: dict[str, Any]) -> Analysis:
    spec = AnalysisSpec.model_validate(
        {"interval": "30s", "minDuration": "30s", "minSamples": 50, "metrics": list(metrics)}
    )
    return Analysis(spec, namespace="shop", model="ranker", arms=Arms(CAND, BASE), started_at=0.0)


def tick(a: Analysis, provider: FakeProvider, now: float) -> Result:
    return asyncio.run(a.tick(provider, now))


def explained(provider: FakeProvider, revision: str, counts: dict[str, float]) -> None:
    """One interval of ``revision``'s explained rows by their most attributed feature."""
    rows = provider.series.setdefault(TOP, [])
    rows.extend(({"revision": revision, "feature": feature}, count) for feature, count in counts.items())


def test_the_engine_rolls_back_a_candidate_relying_on_another_feature_and_promotes_a_like_one() -> None:
    shifted, like = FakeProvider(), FakeProvider()
    explained(shifted, CAND, {"income": 60, "age": 20})
    explained(shifted, BASE, {"age": 70, "income": 10})
    explained(like, CAND, {"income": 12, "age": 66})
    explained(like, BASE, {"age": 70, "income": 10})
    rollback = tick(analysis({**SHIFT, "critical": True}), shifted, 30.0)
    assert rollback.verdict == "rollback", rollback.reason
    assert "candidate 'income', baseline 'age'" in rollback.reason
    assert rollback.evidence[0].candidate_samples == 80 and rollback.evidence[0].baseline_samples == 80
    assert tick(analysis(SHIFT), like, 30.0).verdict == "promote"


def test_a_stable_revision_without_sampling_leaves_the_verdict_unavailable_saying_why() -> None:
    provider = FakeProvider()
    explained(provider, CAND, {"income": 60, "age": 20})
    result = tick(analysis(SHIFT), provider, 30.0)
    assert result.verdict == "unavailable"
    assert f"revision {BASE}" in result.reason and "sampleRate" in result.reason


def with_shift(**runtime: Any) -> dict[str, Any]:
    body = load(CANARY)
    body["spec"]["analysis"]["metrics"].append(dict(SHIFT))
    body["spec"]["runtime"].update(runtime)
    return body


def test_the_api_requires_sampling_and_a_limit() -> None:
    ModelDeployment.model_validate(with_shift(explain={"sampleRate": 0.05}))
    with pytest.raises(ValueError, match=r"set runtime\.explain\.sampleRate"):
        ModelDeployment.model_validate(with_shift())
    no_limit = with_shift(explain={"sampleRate": 0.05})
    del no_limit["spec"]["analysis"]["metrics"][-1]["thresholdRange"]
    with pytest.raises(ValueError, match=r"set thresholdRange\.max"):
        ModelDeployment.model_validate(no_limit)
