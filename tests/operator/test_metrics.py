"""The operator's own metrics, as Prometheus scrapes them."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import generate_latest

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
    left = [line for line in generate_latest().decode().splitlines() if 'namespace="payments"' in line]
    assert left == []


def test_a_deleted_alertrule_leaves_no_series_behind() -> None:
    metrics.observe_alert("shop", "latency", ["Firing"], ["QueryFailed", "NoData"], sent=2, failed=1)
    metrics.observe_alert("shop", "other", ["Pending"], ["NoData"], sent=0, failed=0)
    metrics.forget_alert("shop", "latency")
    text = generate_latest().decode()
    assert 'alertrule="latency"' not in text
    assert 'cutover_alert_evaluation_errors_total{alertrule="other",namespace="shop",reason="NoData"} 1.0' in text
    metrics.forget_alert("shop", "other")
