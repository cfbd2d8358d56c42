"""The rollout state machine, strategy by strategy, with verdicts and on-call requests."""

from __future__ import annotations

from cutover.operator.rollout import Capacity, requests_in, revision_of

from .sim import Sim

CANARY = "modeldeployment-canary.yaml"


def deployed(example: str = CANARY, **changes: object) -> Sim:
    sim = Sim.of(example, **changes)
    sim.step()
    sim.step()
    assert sim.status and sim.status["phase"] == "Healthy", sim.status
    return sim


def test_first_revision_becomes_stable_and_ready() -> None:
    sim = Sim.of(CANARY)
    plan = sim.step()
    assert plan.status.phase == "Pending" and plan.status.stable_revision
    assert [(w.role, w.replicas) for w in plan.workloads] == [("stable", 3)]
    assert [e.reason for e in plan.events] == ["Deployed"]
    plan = sim.step()
    assert plan.status.phase == "Healthy"
    assert {c.type: c.status for c in plan.status.conditions}["Ready"] == "True"
    assert sim.weights() == {"stable": 100}


def test_canary_walks_its_steps_to_promotion() -> None:
    sim = deployed()
    stable = sim.status["stableRevision"]
    sim.change_version("v2")
    sim.step()  # rollout starts, candidate pods asked for, not ready yet: no traffic
    assert sim.status["phase"] == "Progressing" and sim.weights() == {"stable": 100}
    sim.step("continue")  # candidate ready: weight 5
    assert sim.weights() == {"stable": 95, "candidate": 5}
    sim.step("continue")  # analysis step: holds
    assert sim.status["currentStepIndex"] == 1
    sim.step("promote", seconds=10)  # promote verdict but less than minDuration (5m) in the step
    assert sim.status["currentStepIndex"] == 1
    sim.step("promote", seconds=300)  # -> setWeight 20 -> pause 5m
    assert sim.status["currentStepIndex"] == 3 and sim.weights() == {"stable": 80, "candidate": 20}
    sim.step("promote", seconds=310)  # pause over -> setWeight 50: 2 candidate pods asked for
    assert sim.weights() == {"stable": 80, "candidate": 20}  # not live before the pods are ready
    sim.step("promote", seconds=30)  # pods ready -> weight 50 -> analysis step begins
    assert sim.weights() == {"stable": 50, "candidate": 50} and sim.status["currentStepIndex"] == 5
    plan = sim.step("promote", seconds=310)  # last step passed: the candidate is scaled to full size first
    assert plan.status.candidate_revision is not None
    assert {w.role: w.replicas for w in plan.workloads}["candidate"] == 3 and sim.weights()["candidate"] == 50
    plan = sim.step("promote")
    assert plan.status.stable_revision != stable and plan.status.candidate_revision is None
    assert "Promoted" in [e.reason for e in plan.events]
    assert {c.type: c.status for c in plan.status.conditions}["Promoted"] == "True"
    assert sim.weights() == {"stable": 100}
    assert [h.revision for h in plan.status.history][:2] == [plan.status.stable_revision, stable]
    roles = {w.role for w in plan.workloads}
    assert roles == {"stable", "previous"}  # the old stable keeps its pods for the scale-down delay
    sim.step(seconds=60)
    assert {w.role for w in sim.plans[-1].workloads} == {"stable"}


def test_rollback_verdict_returns_traffic_to_stable_and_is_not_retried() -> None:
    sim = deployed()
    stable = sim.status["stableRevision"]
    sim.change_version("v3-bad")
    sim.step()
    sim.step("continue")
    plan = sim.step("rollback")
    assert plan.status.phase == "RolledBack" and plan.status.stable_revision == stable
    assert plan.status.rejected_revision and plan.status.candidate_revision is None
    assert sim.weights() == {"stable": 100}
    assert any(e.reason == "AnalysisFailed" and e.type == "Warning" for e in plan.events)
    assert {c.type: c.status for c in plan.status.conditions}["RolledBack"] == "True"
    for _ in range(3):  # the same spec is not rolled out again
        plan = sim.step()
        assert plan.status.candidate_revision is None and plan.status.phase == "RolledBack"
    sim.change_version("v4")
    assert sim.step().status.candidate_revision is not None


def test_retry_rolls_the_rejected_spec_out_again() -> None:
    sim = deployed()
    sim.change_version("v3")
    sim.step()
    sim.step("rollback")
    plan = sim.step(requests=(sim.annotate("retry", "r-1"),))
    assert plan.status.candidate_revision is not None
    assert plan.status.handled_requests[0].result.startswith("retrying")


def test_unavailable_metrics_freeze_the_weights() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    index = sim.status["currentStepIndex"]
    for errors in (1, 2, 3, 4, 5):
        plan = sim.step("unavailable", seconds=600, errors=errors)
        assert sim.weights() == {"stable": 95, "candidate": 5} and sim.status["currentStepIndex"] == index
        assert plan.status.stable_revision != plan.status.candidate_revision
    conditions = {c.type: c for c in plan.status.conditions}
    assert conditions["AnalysisAvailable"].status == "False"
    sim.step("promote", seconds=300)
    assert sim.status["currentStepIndex"] > index


def test_progress_deadline_rolls_back_a_stuck_candidate() -> None:
    sim = deployed(progressDeadlineSeconds=600)
    sim.change_version("v2")
    sim.stuck.add(revision_of(sim.md.spec.wire()["model"], sim.md.spec.wire()["runtime"]))
    sim.step()
    plan = sim.step("continue", seconds=300)
    assert plan.status.candidate_revision is not None and sim.weights() == {"stable": 100}
    plan = sim.step("continue", seconds=400)
    assert plan.status.phase == "RolledBack"
    assert any(e.reason == "ProgressDeadlineExceeded" for e in plan.events)


def test_on_call_pause_resume_promote_abort() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    plan = sim.step("promote", seconds=600, requests=(sim.annotate("pause", "p-1"),))
    assert plan.status.paused and plan.status.phase == "Paused" and sim.status["currentStepIndex"] == 1
    plan = sim.step("continue", requests=(sim.annotate("resume", "r-1"),))
    assert not plan.status.paused
    plan = sim.step("continue", requests=(sim.annotate("promote", "next-1"),))
    assert sim.status["currentStepIndex"] >= 2
    plan = sim.step("continue", requests=(sim.annotate("abort", "a-1"),))
    assert plan.status.phase == "RolledBack" and any(e.reason == "Aborted" for e in plan.events)
    assert [h.action for h in plan.status.handled_requests][:4] == ["abort", "promote", "resume", "pause"]


def test_promote_full_skips_every_step_and_requests_are_handled_once() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    request = sim.annotate("promote", "full-20261122")
    plan = sim.step(requests=(request,))
    assert plan.status.candidate_revision is None and "Promoted" in [e.reason for e in plan.events]
    # The annotation stays on the object: the next passes see it and do nothing with it.
    sim.change_version("v3")
    for _ in range(3):
        plan = sim.step(requests=tuple(requests_in({"cutover.dev/promote": "full-20261122"})))
        assert plan.status.candidate_revision is not None
        assert not [e for e in plan.events if e.reason.startswith("Request")]
    assert plan.status.handled_requests[0].id == "full-20261122"


def test_invalid_requests_are_answered_not_raised() -> None:
    sim = deployed()
    plan = sim.step(requests=(sim.annotate("promote", "p-1"), sim.annotate("rollbackTo", "0000000000")))
    results = [h.result for h in plan.status.handled_requests]
    assert "ignored: nothing is rolling out" in results
    assert any("not in the revision history" in r for r in results)
    assert all(e.type == "Warning" for e in plan.events)


def test_rollback_request_after_promotion_returns_to_the_previous_stable() -> None:
    sim = deployed()
    first = sim.status["stableRevision"]
    sim.change_version("v2")
    sim.step()
    sim.step(requests=(sim.annotate("promote", "full-1"),))
    second = sim.status["stableRevision"]
    assert second != first
    plan = sim.step(requests=(sim.annotate("rollback", "rb-1"),))
    assert plan.status.stable_revision == first and plan.status.phase == "RolledBack"
    assert plan.status.rejected_revision == second
    for _ in range(2):  # GitOps still says v2: it is not rolled out again
        assert sim.step().status.candidate_revision is None
    plan = sim.step(requests=(sim.annotate("rollbackTo", second),))
    assert plan.status.stable_revision == second


def test_blue_green_preview_takes_no_live_traffic_until_promoted() -> None:
    sim = deployed("modeldeployment-bluegreen.yaml")
    sim.change_version("v15")
    sim.step()
    sim.step("promote", seconds=60)
    assert sim.weights() == {"stable": 100}
    preview = [w for w in sim.plans[-1].workloads if w.role == "preview"]
    assert preview and preview[0].replicas == 4  # full size
    plan = sim.step("promote", seconds=600)  # autoPromotionSeconds 600 reached
    assert "Promoted" in [e.reason for e in plan.events]
    assert {w.role: w.replicas for w in plan.workloads}["previous"] == 4  # kept for scaleDownDelaySeconds


def test_blue_green_never_promotes_without_a_verdict() -> None:
    sim = deployed("modeldeployment-bluegreen.yaml")
    sim.change_version("v15")
    for _ in range(30):
        sim.step("inconclusive", seconds=120)
    assert sim.status["candidateRevision"] is not None


def test_shadow_mirrors_and_promotes_on_agreement() -> None:
    sim = deployed("modeldeployment-shadow.yaml")
    sim.change_version("v8")
    sim.step()
    sim.step("continue")
    traffic = {row["role"]: row for row in sim.status["traffic"]}
    assert traffic["stable"]["weight"] == 100 and traffic["candidate"]["weight"] == 0
    assert traffic["candidate"]["mirrorPercent"] == 30
    sim.step("promote", seconds=1300, agreement=0.90)  # passes the metrics, disagrees too often
    assert sim.status["phase"] == "RolledBack"


def test_shadow_promotes_with_enough_agreement() -> None:
    sim = deployed("modeldeployment-shadow.yaml")
    sim.change_version("v8")
    sim.step()
    sim.step("continue")
    sim.step("promote", seconds=1300, agreement=0.99)
    plan = sim.step("promote", agreement=0.99)  # after scaling the candidate to full size
    assert "Promoted" in [e.reason for e in plan.events]


def test_ab_test_splits_and_promotes_the_winner() -> None:
    sim = deployed("modeldeployment-abtest.yaml")
    sim.change_version("prompt-v4")
    sim.step()
    sim.step("continue")
    assert sim.weights() == {"stable": 50, "candidate": 50}
    sim.step("promote")
    plan = sim.step("promote")
    assert "Promoted" in [e.reason for e in plan.events]


def test_ab_test_without_a_winner_keeps_stable() -> None:
    sim = deployed("modeldeployment-abtest.yaml")
    sim.change_version("prompt-v4")
    sim.step()
    plan = sim.step("continue", seconds=168 * 3600 + 1)
    assert plan.status.phase == "RolledBack" and any(e.reason == "ABTestEnded" for e in plan.events)


def test_fresh_baseline_takes_the_candidates_share() -> None:
    sim = deployed("modeldeployment-gpu-mig.yaml")
    sim.change_version("resnet50-ft-32")
    sim.step()
    plan = sim.step("continue")
    weights = {row.role: row.weight for row in plan.status.traffic}
    assert weights == {"stable": 80, "candidate": 10, "baseline": 10}
    assert plan.analysis is not None and plan.analysis.baseline.endswith("-baseline")


def test_gpu_shortage_swaps_replicas_in_auto_mode() -> None:
    sim = deployed("modeldeployment-gpu-mig.yaml")
    sim.capacity = Capacity("nvidia.com/mig-1g.10gb", 1, free_pods=0, detail="7 slices, 7 used")
    sim.change_version("resnet50-ft-32")
    plan = sim.step()
    replicas = {w.role: w.replicas for w in plan.workloads}
    assert replicas["stable"] == 1 and replicas["candidate"] == 1  # 2 stable replicas, one traded
    condition = {c.type: c for c in plan.status.conditions}["GPUCapacity"]
    assert condition.status == "False" and condition.reason == "SurgeFree"


def test_gpu_shortage_with_surge_always_holds_the_rollout() -> None:
    sim = deployed("modeldeployment-gpu-mig.yaml")
    sim.doc["spec"]["strategy"]["surge"] = "always"
    sim.capacity = Capacity("nvidia.com/mig-1g.10gb", 1, free_pods=0)
    sim.change_version("resnet50-ft-32")
    plan = sim.step()
    assert {w.role for w in plan.workloads} == {"stable"}
    condition = {c.type: c for c in plan.status.conditions}["GPUCapacity"]
    assert condition.reason == "InsufficientGPUCapacity" and "waiting for GPU capacity" in plan.status.message


def test_same_inputs_twice_give_the_same_plan() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    from cutover.operator.rollout import Inputs, reconcile

    inputs = Inputs(sim.md, dict(sim.ready), sim.now)
    assert reconcile(inputs) == reconcile(inputs)
