"""The autoscaler: the Kubernetes HPA algorithm as its documentation states it (the docs'
examples among the cases), with a fake clock, and how the rollout sizes revisions from it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import generate_latest

from cutover.api.v1alpha1.modeldeployment import Autoscaling, ScaleEvent
from cutover.operator import builders, kubectl_plugin, metrics
from cutover.operator.rollout.autoscaling import (
    Behavior,
    Load,
    Policy,
    Reading,
    autoscale,
    decide,
    metric_replicas,
    scale_down_limit,
    scale_up_limit,
    total_replicas,
)

from ..cases import BG, CANARY
from .sim import T0, Sim


def in_flight(total: float, reporting: int, pods: int | None = None) -> Load:
    return Load({"inFlight": Reading("inFlight", total, reporting)}, pods if pods is not None else reporting)


# ---- one metric: ratio, tolerance, pods without a value ---------------------------------------


def test_the_docs_ratio_examples() -> None:
    # "if the current metric value is 200m, and the desired value is 100m, the number of
    # replicas will be doubled ... If the current value is instead 50m, you'll halve"
    assert metric_replicas(4, Reading("inFlight", 4 * 0.2, 4), 0.1) == (8, False)
    assert metric_replicas(4, Reading("inFlight", 4 * 0.05, 4), 0.1) == (2, False)


def test_within_the_tolerance_nothing_changes() -> None:
    assert metric_replicas(10, Reading("inFlight", 10 * 10.9, 10), 10) == (10, True)
    assert metric_replicas(10, Reading("inFlight", 10 * 9.1, 10), 10) == (10, True)
    assert metric_replicas(10, Reading("inFlight", 10 * 11.5, 10), 10) == (12, False)


def test_pods_without_a_value_count_at_the_target_going_down_and_at_zero_going_up() -> None:
    # down: 2 of 4 report 5 against 10; the 2 silent ones count as 10: average 7.5, 3 pods
    assert metric_replicas(4, Reading("inFlight", 10, 2), 10) == (3, False)
    # up: 2 of 4 report 30; the silent ones count as 0: average 15, 6 pods
    assert metric_replicas(4, Reading("inFlight", 60, 2), 10) == (6, False)
    # up that the silent pods turn into down: no change
    assert metric_replicas(4, Reading("inFlight", 15, 1), 10) == (4, True)


def test_in_flight_is_summed_over_the_model_as_an_external_average_value_metric() -> None:
    # however the requests are spread over the pods (or whether new pods were scraped yet)
    assert total_replicas(4, 40, 4) == (10, False)
    assert total_replicas(10, 43, 4) == (10, True)  # 43 / (4 x 10) is within the tolerance
    assert total_replicas(10, 2, 4) == (1, False)


def test_no_reporting_pod_is_an_error() -> None:
    with pytest.raises(ValueError, match="no pod reported"):
        metric_replicas(3, Reading("inFlight", 0, 0), 10)


# ---- policies ------------------------------------------------------------------------------------


def test_the_docs_scale_down_policy_example() -> None:
    # Pods 4 per 60s and Percent 10 per 60s, the policy allowing the most change wins: 80 pods
    # lose 8, then (a period later) 72 lose 8 (10% is 7.2, the count rounds up), ...
    policies = (Policy("Pods", 4, 60), Policy("Percent", 10, 60))
    assert scale_down_limit(80, (), policies, T0) == 72
    removed = (ScaleEvent(at=T0, change=-8),)
    assert scale_down_limit(72, removed, policies, T0 + timedelta(seconds=30)) == 72  # the period is spent
    assert scale_down_limit(72, removed, policies, T0 + timedelta(seconds=61)) == 64
    # ... until below 40 pods the Pods policy allows more: 4 at a time
    assert scale_down_limit(30, (), policies, T0) == 26


def test_default_scale_up_is_double_or_four_pods_per_15s() -> None:
    up = Behavior().up
    assert scale_up_limit(1, (), up, T0) == 5
    assert scale_up_limit(10, (), up, T0) == 20
    added = (ScaleEvent(at=T0, change=4),)
    assert scale_up_limit(5, added, up, T0 + timedelta(seconds=10)) == 5  # 1 -> 5 used this period
    assert scale_up_limit(5, added, up, T0 + timedelta(seconds=16)) == 10


def test_scale_up_from_one_to_forty_takes_policy_steps() -> None:
    now, current, events = T0, 1, ()
    seen = []
    for _ in range(6):
        decision = decide(current, 40, 1, 100, now, events=events)
        current, events = decision.replicas, decision.events
        seen.append((current, decision.limited_by))
        now += timedelta(seconds=15)
    assert seen == [
        (5, "ScaleUpPolicy"),
        (10, "ScaleUpPolicy"),
        (20, "ScaleUpPolicy"),
        (40, ""),
        (40, ""),
        (40, ""),
    ]


# ---- stabilisation windows, clamps, missing metrics ---------------------------------------------


def test_scale_down_waits_for_the_highest_recommendation_of_the_window() -> None:
    behavior = Behavior(down_window=300)
    first = decide(10, 10, 1, 20, T0, behavior=behavior)
    later = decide(10, 4, 1, 20, T0 + timedelta(seconds=60), first.recommendations, first.events, behavior)
    assert (later.replicas, later.limited_by) == (10, "ScaleDownStabilization")
    # the 10 leaves the window 300s after it was recommended: down to the highest since (4)
    at = T0 + timedelta(seconds=301)
    last = decide(10, 3, 1, 20, at, later.recommendations, later.events, behavior)
    assert (last.replicas, last.limited_by) == (4, "ScaleDownStabilization")


def test_scale_up_waits_for_the_lowest_recommendation_of_its_window() -> None:
    behavior = Behavior(up_window=60)
    first = decide(2, 2, 1, 20, T0, behavior=behavior)
    burst = decide(2, 8, 1, 20, T0 + timedelta(seconds=30), first.recommendations, first.events, behavior)
    assert (burst.replicas, burst.limited_by) == (2, "ScaleUpStabilization")
    held = decide(2, 8, 1, 20, T0 + timedelta(seconds=61), burst.recommendations, burst.events, behavior)
    assert (held.replicas, held.limited_by) == (6, "ScaleUpPolicy")  # the window passed; +4 per 15s


def test_min_and_max_clamp() -> None:
    assert (decide(4, 50, 1, 6, T0).replicas, decide(4, 50, 1, 6, T0).limited_by) == (6, "MaxReplicas")
    assert (decide(4, 0, 2, 6, T0).replicas, decide(4, 0, 2, 6, T0).limited_by) == (2, "MinReplicas")
    outside = decide(9, 9, 1, 6, T0)  # maxReplicas lowered below the count
    assert (outside.replicas, outside.limited_by) == (6, "MaxReplicas")


def test_a_missing_metric_holds_the_count() -> None:
    spec = Autoscaling(min_replicas=1, max_replicas=10, target_in_flight=4)
    status = autoscale(spec, None, in_flight(40, 2), T0)
    assert status.desired_replicas == 5
    later = T0 + timedelta(seconds=15)
    for load in (None, Load({"inFlight": None}, 5, "Prometheus unreachable"), in_flight(0, 0, pods=5)):
        held = autoscale(spec, status, load, later)
        assert (held.desired_replicas, held.limited_by) == (5, "MetricMissing")


def test_at_zero_pods_nothing_is_measured_and_zero_is_held() -> None:
    spec = Autoscaling(min_replicas=0, max_replicas=4, target_in_flight=2, target_gpu_utilization=50)
    status = autoscale(spec, None, Load({"inFlight": None, "gpuUtilization": None}, 0), T0)
    assert (status.desired_replicas, status.limited_by) == (0, "MetricMissing")
    readings = {"inFlight": Reading("inFlight", 0, 0), "gpuUtilization": Reading("gpuUtilization", 0, 0)}
    later = autoscale(spec, status, Load(readings, 0), T0 + timedelta(seconds=15))  # type: ignore[arg-type]
    assert later.desired_replicas == 0


def test_one_missing_metric_blocks_scaling_down_but_not_up() -> None:
    spec = Autoscaling(min_replicas=1, max_replicas=20, target_in_flight=4, target_gpu_utilization=70)
    status = autoscale(spec, None, in_flight(4, 1), T0).model_copy(update={"desired_replicas": 6})
    later = T0 + timedelta(seconds=15)
    down = autoscale(spec, status, Load({"inFlight": Reading("inFlight", 6, 6), "gpuUtilization": None}, 6), later)
    assert (down.desired_replicas, down.limited_by) == (6, "MetricMissing")
    up = autoscale(spec, status, Load({"inFlight": Reading("inFlight", 60, 6), "gpuUtilization": None}, 6), later)
    assert up.desired_replicas == 12


def test_the_larger_metric_decides() -> None:
    spec = Autoscaling(min_replicas=1, max_replicas=20, target_in_flight=4, target_gpu_utilization=50)
    readings = {"inFlight": Reading("inFlight", 8, 2), "gpuUtilization": Reading("gpuUtilization", 200, 2)}
    status = autoscale(spec, None, Load(readings, 2), T0)  # type: ignore[arg-type]
    assert (status.metric, status.value, status.target) == ("gpuUtilization", 100.0, 50)


def test_metrics_are_read_once_per_sync_period() -> None:
    spec = Autoscaling(min_replicas=1, max_replicas=10, target_in_flight=4)
    status = autoscale(spec, None, in_flight(8, 1), T0)
    assert autoscale(spec, status, in_flight(80, 1), T0 + timedelta(seconds=10)) is status


# ---- in the rollout ---------------------------------------------------------------------------


def _sim(example: str, **autoscaling: object) -> Sim:
    sim = Sim.of(example)
    runtime = sim.doc["spec"]["runtime"]
    runtime.pop("replicas", None)
    runtime["autoscaling"] = {"minReplicas": 2, "maxReplicas": 20, "targetInFlight": 4, **autoscaling}
    return sim


def _grow(sim: Sim, per_pod: float, passes: int) -> None:
    for _ in range(passes):
        stable = sim.status["stableRevision"] if sim.status else None
        pods = sim.ready.get(stable or "", 0)
        sim.load = in_flight(per_pod * pods, pods)
        sim.step(seconds=15)


def test_stable_follows_load_and_status_says_why() -> None:
    sim = _sim(CANARY)
    _grow(sim, 20, 4)  # 5x the target per pod: 2 -> 6 -> 12 -> 20 (max)
    assert sim.status is not None
    scaled = sim.status["autoscaling"]
    assert (scaled["desiredReplicas"], scaled["limitedBy"]) == (20, "MaxReplicas")
    assert sim.plans[-1].workloads[0].replicas == 20
    active = {c["type"]: c for c in sim.status["conditions"]}
    assert active["ScalingActive"]["status"] == "True"
    assert active["ScalingLimited"]["reason"] == "MaxReplicas"
    assert any(e.reason == "Scaled" for plan in sim.plans for e in plan.events)


def test_a_canary_candidate_takes_its_share_of_the_autoscaled_count_and_baseline_matches() -> None:
    sim = _sim(CANARY, maxReplicas=10)
    sim.doc["spec"]["strategy"]["canary"]["baseline"] = True
    _grow(sim, 20, 4)
    assert sim.plans[-1].workloads[0].replicas == 10
    sim.change_version("2026-12-01")
    for _ in range(4):  # setWeight 5 then analysis: hold there with a "continue" verdict
        sim.step("continue", seconds=15)
    counts = {w.role: w.replicas for w in sim.plans[-1].workloads}
    assert counts == {"stable": 10, "candidate": 1, "baseline": 1}  # ceil(10 x 5%)
    sim.step("promote", seconds=300)  # the analysis step's minDuration
    sim.step("promote", seconds=15)  # setWeight 20
    counts = {w.role: w.replicas for w in sim.plans[-1].workloads}
    assert counts == {"stable": 10, "candidate": 2, "baseline": 2}  # ceil(10 x 20%)


def test_a_blue_green_preview_runs_as_many_pods_as_the_autoscaled_stable() -> None:
    sim = _sim(BG)
    sim.doc["spec"]["strategy"]["blueGreen"].pop("previewReplicaCount", None)
    _grow(sim, 8, 3)  # 2 -> 4 -> 8
    sim.change_version("2026-12-01")
    sim.step(seconds=15)
    counts = {w.role: w.replicas for w in sim.plans[-1].workloads}
    assert counts == {"stable": 8, "preview": 8}


def test_kubectl_cutover_status_says_what_the_autoscaler_did() -> None:
    sim = _sim(CANARY)
    sim.load = in_flight(40, 2)
    sim.step(seconds=15)
    (line,) = [x for x in kubectl_plugin.status_lines({**sim.doc, "status": sim.status}) if x.startswith("Scaling:")]
    assert line.startswith("Scaling:    2 -> 6 pods, inFlight 20/pod (target 4); limited by ScaleUpPolicy: ")


def test_another_scaler_owns_the_replicas() -> None:
    sim = _sim(CANARY)
    sim.scaled_externally = ("fraud-scorer-abc",)
    sim.load = in_flight(400, 2)
    sim.step()
    assert sim.status is not None
    assert sim.status.get("autoscaling") is None
    assert sim.status["scaledExternally"] == ["fraud-scorer-abc"]
    active = next(c for c in sim.status["conditions"] if c["type"] == "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "ScaledExternally")
    assert sim.plans[-1].workloads[0].replicas == 2  # minReplicas: the canary's share is counted from it


def test_a_deployment_another_scaler_owns_is_applied_without_replicas() -> None:
    sim = _sim(CANARY)
    plan = sim.step()
    md = sim.md
    name = builders.child_name(md, plan.workloads[0].revision)
    owned = builders.deployment(md, plan.workloads[0])
    released = builders.deployment(md, plan.workloads[0], scaled_externally=True)
    assert owned["spec"]["replicas"] == 2 and "replicas" not in released["spec"]
    children = builders.children(md, plan.workloads, list(plan.status.traffic), scaled_externally={name})
    assert "replicas" not in next(c for c in children if c["kind"] == "Deployment")["spec"]


def test_max_below_what_a_pooled_canary_step_needs_is_a_condition() -> None:
    sim = _sim(CANARY, maxReplicas=4)
    sim.doc["spec"]["traffic"] = {"provider": "replicas"}
    sim.step()
    limited = next(c for c in sim.status["conditions"] if c["type"] == "ScalingLimited")  # type: ignore[index]
    assert (limited["status"], limited["reason"]) == ("True", "MaxBelowCanaryStep")
    assert "5% canary step needs 20 pods" in limited["message"]


def test_the_decision_is_exported_and_dropped_with_the_object() -> None:
    sim = _sim(CANARY)
    sim.load = in_flight(40, 2)
    metrics.observe(sim.md, sim.step(seconds=15), None, 0.001)
    text = generate_latest().decode()
    labels = 'name="fraud-scorer",namespace="payments"'
    assert f'cutover_autoscaler_replicas{{kind="desired",{labels}}} 6.0' in text  # 2 -> max(2x, +4)
    assert f'cutover_autoscaler_metric_value{{kind="value",metric="inFlight",{labels}}} 20.0' in text
    assert f'cutover_autoscaler_limited{{{labels},reason="ScaleUpPolicy"}} 1.0' in text
    metrics.forget("payments", "fraud-scorer")
    assert "cutover_autoscaler_replicas{" not in generate_latest().decode()
