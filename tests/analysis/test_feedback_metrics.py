"""The ground-truth builtins (issue 20, item 4): ``accuracy`` judges the share of fed-back rows
each arm got wrong with the error rate's anytime-valid test, ``calibrationError`` the
candidate's expected calibration error against ``thresholdRange.max``, both from the gateway's
feedback series; the API refuses them without ``spec.feedback``, and an AlertRule can name them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cutover.analysis import Analysis, Arms, Result
from cutover.analysis.judges import expected_calibration_error
from cutover.api.v1alpha1 import AlertRule, ModelDeployment
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec
from cutover.operator.alerts.queries import builtin_query

from .fakes import FakeProvider

CAND, BASE = "c0ffee00", "ba5e1111"
FEEDBACK = "cutover_gateway_feedback_total"
BY_CONFIDENCE = "cutover_gateway_feedback_by_confidence_total"
CONFIDENCE = "cutover_gateway_feedback_confidence_total"
ACCURACY = {"name": "accuracy", "builtin": "accuracy", "critical": True}
CALIBRATION = {"name": "calibration", "builtin": "calibrationError", "thresholdRange": {"max": 0.05}}


def analysis(*metrics: dict[str, Any], min_samples: int = 100) -> Analysis:
    spec = AnalysisSpec.model_validate(
        {"interval": "30s", "minDuration": "30s", "minSamples": min_samples, "metrics": list(metrics)}
    )
    return Analysis(spec, namespace="shop", model="ranker", arms=Arms(CAND, BASE), started_at=0.0)


def tick(a: Analysis, provider: FakeProvider, now: float) -> Result:
    return asyncio.run(a.tick(provider, now))


def fed_back(provider: FakeProvider, revision: str, right: float, wrong: float) -> None:
    rows = provider.series.setdefault(FEEDBACK, [])
    rows.append(({"revision": revision, "outcome": "correct"}, right))
    rows.append(({"revision": revision, "outcome": "incorrect"}, wrong))


def binned(provider: FakeProvider, revision: str, bins: dict[str, tuple[float, float, float]]) -> None:
    """Per bucket: rows, rows right, summed confidence."""
    for bucket, (rows, right, confidence) in bins.items():
        provider.series.setdefault(BY_CONFIDENCE, []).extend(
            [
                ({"revision": revision, "bucket": bucket, "outcome": "correct"}, right),
                ({"revision": revision, "bucket": bucket, "outcome": "incorrect"}, rows - right),
            ]
        )
        provider.series.setdefault(CONFIDENCE, []).append(({"revision": revision, "bucket": bucket}, confidence))


def test_a_candidate_wrong_more_often_is_rolled_back_on_accuracy_alone() -> None:
    a = analysis(ACCURACY)
    provider = FakeProvider()
    fed_back(provider, CAND, right=150, wrong=50)  # 75% accurate
    fed_back(provider, BASE, right=180, wrong=20)  # 90% accurate
    verdicts = [tick(a, provider, 30.0 * k) for k in range(1, 10)]
    rollback = next(r for r in verdicts if r.verdict == "rollback")
    [evidence] = rollback.evidence
    assert "critical metric accuracy failed" in rollback.reason
    assert "wrong answers per trial" in evidence.reason
    assert evidence.estimate == pytest.approx(2.5, rel=0.01)  # wrong-answer rate ratio 0.25 / 0.1
    assert all('revision=~"ba5e1111|c0ffee00"' in s for s in provider.selectors)


def test_a_candidate_as_accurate_as_stable_is_promoted() -> None:
    a = analysis({**ACCURACY, "passMargin": 0.5})
    provider = FakeProvider()
    for revision in (CAND, BASE):
        fed_back(provider, revision, right=450, wrong=50)
    verdicts = [tick(a, provider, 30.0 * k).verdict for k in range(1, 20)]
    assert "promote" in verdicts and "rollback" not in verdicts


def test_no_feedback_yet_is_too_little_data_and_an_absent_series_is_unavailable() -> None:
    a = analysis(ACCURACY)
    provider = FakeProvider()
    fed_back(provider, CAND, 0, 0)  # the gateway made the children at 0 with the first answer
    fed_back(provider, BASE, 0, 0)
    assert tick(a, provider, 30.0).verdict == "inconclusive"
    absent = analysis(ACCURACY)
    only_stable = FakeProvider()
    fed_back(only_stable, BASE, 10, 0)
    result = tick(absent, only_stable, 30.0)
    assert result.verdict == "unavailable"
    assert f"no samples of {FEEDBACK} for revision {CAND}" in result.reason
    assert "spec.feedback" in result.reason  # the series says when it is absent


def test_expected_calibration_error_is_the_weighted_gap_between_accuracy_and_confidence() -> None:
    # 100 rows at 0.95 mean confidence, 80 right: gap 0.15 with weight 100/200; 100 rows at 0.55, 55 right: 0.
    bins = {"1": [100.0, 80.0, 95.0], "0.6": [100.0, 55.0, 55.0]}
    assert expected_calibration_error(bins) == pytest.approx(0.075)
    assert expected_calibration_error({}) is None


def test_an_overconfident_candidate_fails_calibration_and_a_calibrated_one_passes() -> None:
    over, calibrated = analysis(CALIBRATION), analysis(CALIBRATION)
    provider = FakeProvider()
    binned(provider, CAND, {"1": (100, 80, 95.5), "0.6": (50, 28, 27.5)})  # ECE (15.5 + 0.5) / 150
    binned(provider, BASE, {"1": (100, 95, 95.5), "0.6": (50, 27, 27.5)})
    result = tick(over, provider, 30.0)
    [evidence] = result.evidence
    assert evidence.decision == "fail" and evidence.estimate == pytest.approx(16 / 150)
    assert "above thresholdRange.max 0.05" in evidence.reason and "baseline 0.00667" in evidence.reason
    swapped = FakeProvider()
    binned(swapped, CAND, {"1": (100, 95, 95.5), "0.6": (50, 27, 27.5)})
    binned(swapped, BASE, {"1": (100, 80, 95.5), "0.6": (50, 28, 27.5)})
    [evidence] = tick(calibrated, swapped, 30.0).evidence
    assert evidence.decision == "pass"


def test_calibration_is_judged_when_the_baseline_answers_without_probabilities() -> None:
    """A stable revision answering logits (or labels) gets its truth, but no confidence bins:
    the candidate's calibration is judged against the limit all the same."""
    over, calibrated = analysis(CALIBRATION), analysis(CALIBRATION)
    provider, steady = FakeProvider(), FakeProvider()
    fed_back(provider, BASE, 150, 0)
    fed_back(steady, BASE, 150, 0)
    binned(provider, CAND, {"1": (100, 80, 95.5), "0.6": (50, 28, 27.5)})
    binned(steady, CAND, {"1": (100, 95, 95.5), "0.6": (50, 27, 27.5)})
    result = tick(over, provider, 30.0)
    assert result.verdict == "rollback" and "above thresholdRange.max 0.05" in result.reason
    assert "baseline n/a" in result.evidence[0].reason
    assert tick(calibrated, steady, 30.0).verdict == "promote"


def test_calibration_waits_for_the_minimum_rows_and_accumulates_intervals() -> None:
    a = analysis(CALIBRATION, min_samples=200)
    provider = FakeProvider()
    for revision in (CAND, BASE):
        binned(provider, revision, {"1": (60, 57, 57.6)})
    first = tick(a, provider, 30.0)
    assert first.evidence[0].decision == "inconclusive" and "60 of 200 fed-back rows" in first.evidence[0].reason
    for k in range(2, 5):
        last = tick(a, provider, 30.0 * k)
    assert last.evidence[0].candidate_samples == 240
    assert last.evidence[0].decision == "pass"


def test_confidence_sums_are_amounts_not_counts_but_must_be_finite() -> None:
    a = analysis(CALIBRATION)
    provider = FakeProvider()
    binned(provider, CAND, {"1": (100, 90, 93.25)})
    binned(provider, BASE, {"1": (100, 90, float("nan"))})
    result = tick(a, provider, 30.0)
    assert result.verdict == "unavailable"
    assert "is nan, not a finite non-negative amount" in result.reason


def model_deployment(spec: dict[str, Any]) -> dict[str, Any]:
    base = {
        "model": {"name": "ranker", "version": "1", "format": "onnx", "storageUri": "pvc://models/ranker.onnx"},
        "strategy": {"type": "canary", "canary": {"steps": [{"setWeight": 50}]}},
    }
    return {"apiVersion": "cutover.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "r"}} | {
        "spec": base | spec
    }


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"analysis": {"metrics": [ACCURACY]}}, "builtin accuracy and calibrationError read ground-truth feedback"),
        ({"analysis": {"metrics": [CALIBRATION]}}, "set spec.feedback"),
        (
            {"feedback": {}, "analysis": {"metrics": [{"name": "c", "builtin": "calibrationError"}]}},
            "set thresholdRange.max",
        ),
        (
            {"feedback": {}, "traffic": {"provider": "replicas"}},
            "spec.feedback needs traffic.provider gateway",
        ),
        (
            {
                "feedback": {},
                "strategy": {"type": "shadow", "shadow": {}},
                "analysis": {"metrics": [ACCURACY]},
            },
            "a shadow candidate's answers never reach clients",
        ),
    ],
)
def test_the_api_refuses_feedback_metrics_that_could_never_have_data(spec: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        ModelDeployment.model_validate(model_deployment(spec))


def test_the_api_takes_feedback_metrics_with_spec_feedback() -> None:
    md = ModelDeployment.model_validate(
        model_deployment({"feedback": {"output": "probabilities"}, "analysis": {"metrics": [ACCURACY, CALIBRATION]}})
    )
    assert md.spec.feedback is not None and md.spec.feedback.output == "probabilities"


def test_an_alert_rule_can_watch_accuracy_and_calibration() -> None:
    for builtin in ("accuracy", "calibrationError"):
        AlertRule.model_validate(
            {
                "apiVersion": "cutover.dev/v1alpha1",
                "kind": "AlertRule",
                "metadata": {"name": "a"},
                "spec": {
                    "target": {"name": "ranker"},
                    "metric": {"builtin": builtin},
                    "condition": {"operator": "<" if builtin == "accuracy" else ">", "threshold": 0.9},
                    "severity": "warning",
                },
            }
        )
    labels = {"namespace": "shop", "model": "ranker", "revision": CAND}
    accuracy = builtin_query("accuracy", "gateway", labels, "5m")
    assert accuracy.startswith(
        f'sum(rate({FEEDBACK}{{namespace="shop",model="ranker",revision="{CAND}",outcome="correct"}}'
    )
    ece = builtin_query("calibrationError", "gateway", labels, "5m")
    assert ece.startswith("sum(abs(sum by (bucket) (") and f"rate({CONFIDENCE}" in ece
