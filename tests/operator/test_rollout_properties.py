"""Invariants of the state machine over random specs, verdict sequences, pod readiness,
on-call requests and firing AlertRules (hypothesis)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutover.api.v1alpha1 import ModelDeployment, seconds
from cutover.operator.rollout import (
    BASELINE_SUFFIX,
    AlertAction,
    AnalysisInput,
    Capacity,
    Inputs,
    Request,
    comparison,
    reconcile,
)

from ..cases import load
from .sim import T0

EXAMPLES = ["modeldeployment-canary.yaml", "modeldeployment-bluegreen.yaml", "modeldeployment-shadow.yaml",
            "modeldeployment-abtest.yaml", "modeldeployment-gpu-mig.yaml"]  # fmt: skip
VERDICTS = [None, "promote", "continue", "rollback", "inconclusive", "unavailable"]
ACTIONS = ["promote", "abort", "rollback", "rollbackTo", "pause", "resume", "retry"]
ALERT_ACTIONS = ["pause", "rollback", "fallback"]
ALERT_ROLES = ["stable", "candidate", "previous"]

steps = st.lists(
    st.fixed_dictionaries({
        "verdict": st.sampled_from(VERDICTS),
        "seconds": st.sampled_from([1, 30, 120, 400, 4000]),
        "version": st.sampled_from([None, None, None, "v2", "v3", "v4"]),
        "ready": st.sampled_from(["all", "all", "none", "half"]),
        "request": st.one_of(st.none(), st.tuples(st.sampled_from(ACTIONS), st.integers(0, 3))),
        "capacity": st.sampled_from([None, 0, 1, 10]),
        "replicas": st.sampled_from([None, 1, 3]),
        "alert": st.one_of(st.none(), st.tuples(st.sampled_from(ALERT_ACTIONS), st.sampled_from(ALERT_ROLES),
                                                st.integers(0, 2))),
    }),
    min_size=1,
    max_size=25,
)  # fmt: skip


def run(example: str, script: list[dict[str, Any]]) -> None:
    doc = copy.deepcopy(load(example))
    doc["metadata"]["generation"] = 1
    status: dict[str, Any] | None = None
    ready: dict[str, int] = {}
    now = T0
    ever_stable: set[str] = set()
    for i, move in enumerate(script):
        if move["version"]:
            doc["spec"]["model"]["version"] = move["version"]
            doc["metadata"]["generation"] += 1
        if move["replicas"]:
            doc["spec"]["runtime"]["replicas"] = move["replicas"]
            doc["spec"]["runtime"].pop("autoscaling", None)
        md = ModelDeployment.model_validate({**doc, "status": status} if status else doc)
        now += timedelta(seconds=move["seconds"])
        verdict = move["verdict"]
        judged = comparison(md.spec, md.status)
        analysis = (
            AnalysisInput(judged, verdict, "scripted", consecutive_errors=1, agreement=0.99)
            if verdict and judged
            else None
        )
        requests: tuple[Request, ...] = ()
        if move["request"]:
            action, n = move["request"]
            value = (md.status.history[n % len(md.status.history)].revision
                     if action == "rollbackTo" and md.status and md.status.history else f"{action}-{i}")  # fmt: skip
            requests = (Request(action, value),)
        alerts: tuple[AlertAction, ...] = ()
        if move["alert"] and md.status:
            action, role, firing = move["alert"]
            history = md.status.history
            fired_for = {
                "stable": md.status.stable_revision,
                "candidate": md.status.candidate_revision,
                "previous": history[1].revision if len(history) > 1 else None,
            }[role]
            if fired_for:
                alerts = (AlertAction("rule", action, fired_for, T0 + timedelta(minutes=firing)),)
        capacity = None if move["capacity"] is None else Capacity("nvidia.com/gpu", 1, move["capacity"])
        inputs = Inputs(md, dict(ready), now, analysis, requests, capacity, alerts=alerts)
        plan = reconcile(inputs)

        # Applying the same inputs twice changes nothing.
        assert reconcile(inputs) == plan

        new = plan.status
        previous_stable = md.status.stable_revision if md.status else None
        # A fallback stands in for stable, never is it.
        assert new.fallback_revision is None or new.fallback_revision != new.stable_revision
        # Live weights sum to 100 once anything is stable.
        if new.stable_revision is not None:
            assert sum(row.weight for row in new.traffic) == 100, new.traffic
        # No live traffic to a revision without ready pods, unless nothing at all is ready.
        if any(ready.get(row.revision, 0) > 0 for row in new.traffic):
            for row in new.traffic:
                if row.weight > 0:
                    assert ready.get(row.revision, 0) > 0, (row, ready)
        # Nothing is promoted without a promote verdict (now, or before scaling up) or a human request.
        if previous_stable is not None and new.stable_revision != previous_stable:
            human = any(r.action in ("promote", "rollback", "rollbackTo") for r in requests)
            human = human or any(a.action == "rollback" for a in alerts)  # an AlertRule acting for on-call
            passed = md.status is not None and md.status.promoting  # a promote verdict earlier, scaling up since
            assert human or verdict == "promote" or passed, (previous_stable, new.stable_revision, verdict)
            # A rollback lands on a revision that was stable before.
            if not any(e.reason == "Promoted" for e in plan.events):
                assert new.stable_revision in ever_stable
        if new.stable_revision is not None:
            ever_stable.add(new.stable_revision)
        ever_stable.update(r.revision for r in new.history)  # stable within a pass, then rolled back
        # Weights and mirrors are percentages; the baseline never takes more than the candidate.
        roles = {row.role: row for row in new.traffic}
        if "baseline" in roles and "candidate" in roles:
            assert roles["baseline"].weight <= roles["candidate"].weight or roles["stable"].weight == 0
        for row in new.traffic:
            assert 0 <= row.weight <= 100 and 0 <= row.mirror_percent <= 100
        assert len({w.revision for w in plan.workloads}) == len(plan.workloads)
        # What GitOps tools read: a rollout under way is Reconciling; an end that needs a new
        # spec or on-call is Stalled (kstatus' Failed) and only that; never both.
        gitops = {c.type: c.status for c in new.conditions if c.type in ("Reconciling", "Stalled")}
        assert not gitops["Reconciling"] == gitops["Stalled"] == "True", new.message
        if new.candidate_revision is not None:
            assert gitops["Reconciling"] == "True", new.message
        ended = new.phase in ("RolledBack", "Failed") or (new.phase == "Degraded" and new.fallback_revision is not None)
        assert (gitops["Stalled"] == "True") == ended, (new.phase, new.message)

        status = new.wire()
        fraction = {"all": 1.0, "none": 0.0, "half": 0.5}[move["ready"]]
        ready = {w.revision: int(w.replicas * fraction) for w in plan.workloads}
        ready = {r: n for r, n in ready.items() if not r.endswith(BASELINE_SUFFIX) or n}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=st.sampled_from(EXAMPLES), script=steps)
def test_invariants_hold_over_random_rollouts(example: str, script: list[dict[str, Any]]) -> None:
    run(example, script)


def _longest_step(md: ModelDeployment) -> float:
    """The longest wait the spec configures on its own: a timed pause, an analysis step's
    maxDuration, the least analysis time, the shadow or A/B duration, autoPromotionSeconds."""
    strategy, analysis = md.spec.strategy, md.spec.analysis
    waits = [seconds(analysis.min_duration)]
    for step in strategy.canary.steps if strategy.canary else []:
        if step.pause is not None and step.pause.duration:
            waits.append(seconds(step.pause.duration))
        if step.analysis is not None and step.analysis.max_duration:
            waits.append(seconds(step.analysis.max_duration))
    if strategy.shadow:
        waits.append(seconds(strategy.shadow.duration))
    if strategy.ab_test:
        waits.append(seconds(strategy.ab_test.duration))
    if strategy.blue_green:
        waits.append(float(strategy.blue_green.auto_promotion_seconds or 0))
    return max(waits)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    example=st.sampled_from(EXAMPLES),
    verdicts=st.lists(
        st.sampled_from([None, "continue", "inconclusive", "unavailable", "promote"]), min_size=1, max_size=6
    ),
    readiness=st.lists(st.sampled_from(["all", "none", "half"]), min_size=1, max_size=4),
    tick=st.sampled_from([30, 300, 1200]),
    deadline=st.sampled_from([60, 600, 3600]),
)
def test_no_state_lasts_for_ever_without_a_decision(
    example: str, verdicts: list[str | None], readiness: list[str], tick: int, deadline: int
) -> None:
    """Whatever the verdicts and the pods do, every wait ends within progressDeadlineSeconds plus
    the longest configured step: the rollout promotes, rolls back, or is paused for a human (an
    indefinite pause step, a blue/green preview without auto-promotion, metrics unavailable)."""
    doc = copy.deepcopy(load(example))
    doc["metadata"]["generation"] = 1
    doc["spec"]["progressDeadlineSeconds"] = deadline
    md = ModelDeployment.model_validate(doc)
    bound = deadline + _longest_step(md)
    tick = max(tick, int(bound / 60))
    now, ready, status = T0, {}, None
    for _ in range(2):  # v1 becomes stable and ready
        md = ModelDeployment.model_validate({**doc, "status": status} if status else doc)
        plan = reconcile(Inputs(md, ready, now))
        status, ready = plan.status.wire(), {w.revision: w.replicas for w in plan.workloads}
    doc["spec"]["model"]["version"] = "v2"
    doc["metadata"]["generation"] = 2
    state, since = None, now
    steps = len(md.spec.strategy.canary.steps) if md.spec.strategy.canary else 1
    # Enough passes for the time bound, and at least a few per step: a pass longer than the bound
    # still moves a rollout one step at a time.
    for i in range(max(int((steps + 2) * bound / tick), 3 * (steps + 2)) + 4):
        now += timedelta(seconds=tick)
        md = ModelDeployment.model_validate({**doc, "status": status})
        judged = comparison(md.spec, md.status)
        verdict = verdicts[i % len(verdicts)]
        analysis = AnalysisInput(judged, verdict, "scripted", 4, agreement=0.99) if verdict and judged else None  # type: ignore[arg-type]
        plan = reconcile(Inputs(md, ready, now, analysis))
        new = plan.status
        if new.candidate_revision is None or new.phase == "Paused":
            return  # promoted, rolled back, or waiting for a person (and saying so)
        key = (new.current_step_index, new.candidate_ready_replicas, new.promoting)
        if key != state:
            state, since = key, now
        assert (now - since).total_seconds() <= bound + tick, (key, new.message)
        status = plan.status.wire()
        how = readiness[i % len(readiness)]
        ready = {w.revision: {"all": w.replicas, "none": 0, "half": w.replicas // 2}[how] for w in plan.workloads}
    raise AssertionError(f"still {status['phase']} after {(now - T0).total_seconds():.0f}s: {status['message']}")
