"""The operator's own metrics, as Prometheus scrapes them."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY, generate_latest

from cutover.api.v1alpha1.modeldeployment import AnalysisStatus, MetricEvidence
from cutover.operator import metrics
from cutover.operator.rollout import AlertAction, AnalysisInput, comparison

from .sim import T0, Sim


def test_reconcile_phase_weight_and_transitions_are_exported() -> None:
    sim = Sim.of("modeldeployment-canary.yaml")
    sim.step()
    plan = sim.step()
    metrics.observe(sim.md, plan, None, 0.004)
    sim.change_version("v2")
    sim.step()
    plan = sim.step("continue")
    judged = comparison(sim.md.spec, sim.md.status)
    assert judged is not None
    metrics.observe(sim.md, plan, AnalysisInput(judged, "continue"), 0.003)
    text = generate_latest().decode()
    assert 'cutover_operator_reconciles_total{kind="ModelDeployment"}' in text
    assert 'cutover_rollout_phase{name="fraud-scorer",namespace="payments",phase="Progressing"} 1.0' in text
    assert 'cutover_rollout_candidate_weight{name="fraud-scorer",namespace="payments"} 5.0' in text
    assert 'cutover_rollout_decisions_total{verdict="continue"}' in text
    assert "cutover_operator_reconcile_duration_seconds_bucket" in text


def test_alert_actions_are_counted_by_action_and_whether_they_were_taken() -> None:
    sim = Sim.of("modeldeployment-canary.yaml")
    sim.step()
    sim.step()
    before = metrics.ALERT_ACTIONS.labels("pause", "false")._value.get()
    fired = AlertAction("latency", "pause", sim.status["stableRevision"], T0 + timedelta(minutes=1))
    metrics.observe(sim.md, sim.step(alerts=(fired,)), None, 0.002)  # nothing rolls out: ignored
    assert metrics.ALERT_ACTIONS.labels("pause", "false")._value.get() == before + 1
    assert 'cutover_alert_actions_total{action="pause",taken="false"}' in generate_latest().decode()


def test_a_deleted_modeldeployment_leaves_no_series_behind() -> None:
    """Its phase (one series per phase) and weight series stayed for the life of the process:
    2,000 ModelDeployments created and deleted left 16,000 series in every scrape."""
    sim = Sim.of("modeldeployment-canary.yaml")
    sim.step()
    metrics.observe(sim.md, sim.step(), None, 0.001)
    assert 'cutover_rollout_phase{name="fraud-scorer",namespace="payments"' in generate_latest().decode()
    metrics.forget("payments", "fraud-scorer")
    # Its own series only: other tests' AlertRules in the same namespace keep theirs.
    text = generate_latest().decode()
    left = [line for line in text.splitlines() if 'namespace="payments"' in line and 'alertrule="' not in line]
    assert left == []


def test_a_deleted_alertrule_leaves_no_series_behind() -> None:
    metrics.observe_alert("shop", "latency", ["Firing"], ["QueryFailed", "NoData"], sent=2, failed=1)
    metrics.observe_alert("shop", "other", ["Pending"], ["NoData"], sent=0, failed=0)
    metrics.forget_alert("shop", "latency")
    text = generate_latest().decode()
    assert 'alertrule="latency"' not in text
    assert 'cutover_alert_evaluation_errors_total{alertrule="other",namespace="shop",reason="NoData"} 1.0' in text
    metrics.forget_alert("shop", "other")


def test_a_rollout_exports_its_last_progress_and_whether_its_metrics_can_be_read() -> None:
    """The chart's stuck-rollout and analysis-unavailable alerts read these two series; they
    exist only while a candidate rolls out, so a finished rollout raises neither."""
    labels = {"namespace": "payments", "name": "fraud-scorer"}

    def value(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    sim = Sim.of("modeldeployment-canary.yaml")
    sim.step()
    sim.step()
    sim.change_version("v2")
    sim.step()
    plan = sim.step("continue")
    metrics.observe(sim.md, plan, None, 0.001)
    started = plan.status.last_progress_at
    assert started is not None
    assert value("cutover_rollout_last_progress_timestamp_seconds") == started.timestamp()
    assert value("cutover_rollout_analysis_available") == 1.0
    plan = sim.step("unavailable", errors=4)  # consecutiveErrorLimit failed reads in a row
    metrics.observe(sim.md, plan, None, 0.001)
    assert value("cutover_rollout_analysis_available") == 0.0
    assert value("cutover_rollout_last_progress_timestamp_seconds") == started.timestamp(), "frozen: no progress"
    plan = sim.step(requests=(sim.annotate("abort", "1"),))
    assert plan.status.candidate_revision is None
    metrics.observe(sim.md, plan, None, 0.001)
    assert value("cutover_rollout_last_progress_timestamp_seconds") is None
    assert value("cutover_rollout_analysis_available") is None
    metrics.forget("payments", "fraud-scorer")


def test_the_last_analysis_is_exported_per_metric_with_its_bounds_and_decision() -> None:
    """The operations dashboard shows each metric's estimate between its bounds and its decision;
    a metric that leaves the analysis, and a ModelDeployment that is gone, leave no series."""
    sim = Sim.of("modeldeployment-canary.yaml")
    sim.step()
    sim.step()
    sim.change_version("v2")
    sim.step()

    def analysed(*evidence: MetricEvidence) -> str:
        judged = comparison(sim.md.spec, sim.md.status)
        assert judged is not None
        status = AnalysisStatus(verdict="continue", metrics=list(evidence))
        metrics.observe(sim.md, sim.step(analysis=AnalysisInput(judged, "continue", status=status)), None, 0.001)
        return generate_latest().decode()

    labels = 'metric="error-rate",name="fraud-scorer",namespace="payments"'
    text = analysed(
        MetricEvidence(name="error-rate", estimate=1.25, lower=0.75, upper=None, decision="continue"),
        MetricEvidence(name="latency", estimate=0.5, lower=0.25, upper=1.5, decision="pass"),
    )
    assert f"cutover_analysis_estimate{{{labels}}} 1.25" in text
    assert f"cutover_analysis_lower_bound{{{labels}}} 0.75" in text
    assert f"cutover_analysis_upper_bound{{{labels}}}" not in text  # unbounded: no series, not +Inf
    assert f'cutover_analysis_decision{{decision="continue",{labels}}} 1.0' in text
    assert f'cutover_analysis_decision{{decision="fail",{labels}}} 0.0' in text
    text = analysed(MetricEvidence(name="latency", estimate=0.5, lower=0.25, upper=1.5, decision="pass"))
    assert 'metric="error-rate"' not in text
    assert 'cutover_analysis_upper_bound{metric="latency",name="fraud-scorer",namespace="payments"} 1.5' in text
    metrics.forget("payments", "fraud-scorer")
    assert "cutover_analysis_" not in "".join(
        line for line in generate_latest().decode().splitlines() if not line.startswith("#")
    )
