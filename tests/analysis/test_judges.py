"""The decision rule over per-metric evidence."""

from __future__ import annotations

from cutover.analysis import CountJudge, Counts, Evidence, Histogram, JudgeSettings, LatencyJudge, Result, decide


def ev(name: str, decision: str, critical: bool = False) -> Evidence:
    return Evidence(name, decision, f"{name} says {decision}", critical)  # type: ignore[arg-type]


def test_critical_failure_rolls_back_before_warm_up() -> None:
    verdict, reason = decide(
        [ev("errors", "fail", critical=True), ev("latency", "inconclusive")],
        min_samples_met=False,
        min_duration_met=False,
    )
    assert verdict == "rollback" and reason.startswith("critical metric errors failed")


def test_non_critical_failure_waits_for_warm_up() -> None:
    evidence = [ev("latency", "fail"), ev("errors", "continue")]
    assert decide(evidence, min_samples_met=True, min_duration_met=False)[0] == "continue"
    assert decide(evidence, min_samples_met=True, min_duration_met=True)[0] == "rollback"


def test_too_little_data_is_inconclusive_never_a_failure() -> None:
    verdict, reason = decide([ev("errors", "inconclusive")], min_samples_met=False, min_duration_met=True)
    assert verdict == "inconclusive" and "errors" in reason


def test_promotion_needs_every_metric_and_the_minimum_time() -> None:
    evidence = [ev("errors", "pass"), ev("latency", "pass")]
    assert decide(evidence, min_samples_met=True, min_duration_met=False)[0] == "continue"
    assert decide(evidence, min_samples_met=True, min_duration_met=True)[0] == "promote"
    assert (
        decide([ev("errors", "pass"), ev("latency", "continue")], min_samples_met=True, min_duration_met=True)[0]
        == "continue"
    )


def test_count_judge_evidence_carries_the_numbers() -> None:
    judge = CountJudge("error-rate", JudgeSettings(alpha=0.01, alpha_share=0.01, critical=True), what="errors")
    for _ in range(6):
        judge.update(Counts(90, 1500), Counts(15, 1500))
    evidence = judge.evidence(min_samples=1000)
    assert evidence.decision == "fail"
    assert evidence.candidate_samples == evidence.baseline_samples == 9000
    assert evidence.lower is not None and evidence.lower > 1.0
    assert evidence.e_value is not None and evidence.e_value >= 100
    assert evidence.p_value is not None and evidence.p_value <= 0.01
    assert "candidate 0.06 vs baseline 0.01 errors per trial" in evidence.reason


def test_threshold_range_is_an_absolute_guardrail() -> None:
    judge = CountJudge("error-rate", JudgeSettings(alpha=0.01, alpha_share=0.01, threshold_max=0.05))
    judge.update(Counts(80, 1000), Counts(80, 1000))
    assert judge.evidence(min_samples=500).decision == "fail"
    assert "outside thresholdRange" in judge.evidence(min_samples=500).reason
    assert judge.evidence(min_samples=5000).decision == "inconclusive"


def test_an_unbounded_confidence_bound_is_shown_as_such_never_as_zero() -> None:
    """Before any event the ratio's confidence sequence is [0, ∞): the reason says so, and the
    status leaves the upper bound out rather than writing a number (issue 12, item 13)."""
    judge = CountJudge("error-rate", JudgeSettings(alpha=0.01, alpha_share=0.01))
    judge.update(Counts(0, 50), Counts(0, 50))
    evidence = judge.evidence(min_samples=200)
    assert "in [0, ∞)" in evidence.reason and "n/a]" not in evidence.reason
    assert evidence.lower == 0.0 and evidence.upper is None
    (status,) = Result(0.0, "inconclusive", "", (evidence,)).status().metrics
    assert "upper" not in status.wire() and status.lower == 0.0
    # Once the ratio is bounded both sides are numbers.
    for _ in range(40):
        judge.update(Counts(10, 1000), Counts(10, 1000))
    bounded = judge.evidence(min_samples=200)
    assert bounded.upper is not None and "∞" not in bounded.reason.split(":")[0]


def test_latency_quantiles_leave_out_an_unbounded_side() -> None:
    judge = LatencyJudge("latency", JudgeSettings(alpha=0.01, alpha_share=0.01), threshold_seconds=0.1)
    few = Histogram((0.05, 0.1, 0.25), (1.0, 2.0, 3.0, 3.0))
    judge.update_histograms(few, few)
    reason = judge.evidence(min_samples=200).reason
    assert "inf" not in reason and "p50 not bounded yet" in reason
