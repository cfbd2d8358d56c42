"""Faults reproduced from the field (issue 12), each pinned at the state machine."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from cutover.api.v1alpha1.modeldeployment import AnalysisStatus
from cutover.operator import kubectl_plugin, pods
from cutover.operator.rollout import (
    AnalysisInput,
    Capacity,
    Inputs,
    Request,
    WatchInput,
    comparison,
    reconcile,
    requests_in,
)

from ..cases import load
from .sim import Sim
from .test_rollout import CANARY, deployed


def _verdict_about_stored_status(sim: Sim, verdict: str) -> AnalysisInput:
    """What the operator's verdict source returns: a verdict about the rollout in the stored status."""
    md = sim.md
    judged = comparison(md.spec, md.status)
    assert judged is not None
    return AnalysisInput(judged, verdict, f"{verdict} for {judged.candidate}")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- 1: verdicts name their pair


def test_a_rollback_verdict_about_v2_does_not_reject_v3_pushed_in_the_same_pass() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    v2 = sim.status["candidateRevision"]
    stale = _verdict_about_stored_status(sim, "rollback")  # computed from the status that still says v2
    sim.change_version("v3")  # a fix pushed through GitOps while the verdict was being read
    sim.step(analysis=stale)
    status = sim.status
    v3 = status["candidateRevision"]
    assert v3 not in (None, v2), status
    assert status.get("rejectedRevision") is None and status["phase"] == "Progressing"
    assert not [e for e in sim.plans[-1].events if e.reason == "AnalysisFailed"]
    # The same verdict does not judge v3 on a later pass either.
    sim.step(analysis=stale)
    assert sim.status["candidateRevision"] == v3 and sim.status.get("rejectedRevision") is None


def test_verdicts_about_another_baseline_or_an_earlier_attempt_are_ignored() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    first_attempt = _verdict_about_stored_status(sim, "promote")
    sim.step("rollback")
    assert sim.status["rejectedRevision"] == first_attempt.judged.candidate
    sim.step(requests=(sim.annotate("retry", "retry-1"),))  # the same candidate, a new attempt
    assert sim.status["candidateRevision"] == first_attempt.judged.candidate
    index = sim.status["currentStepIndex"]
    for _ in range(3):  # the first attempt's promote verdict moves nothing in the second attempt
        sim.step(analysis=first_attempt, seconds=400)
        assert sim.status["candidateRevision"] == first_attempt.judged.candidate
    assert sim.status["currentStepIndex"] <= max(index, 1)
    wrong_baseline = AnalysisInput(replace(first_attempt.judged, baseline="0123456789"), "rollback")
    sim.step(analysis=wrong_baseline)
    assert sim.status["candidateRevision"] is not None and sim.status.get("rejectedRevision") is None


def test_a_verdict_read_while_the_operator_was_down_applies_only_to_its_own_candidate() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    stale = _verdict_about_stored_status(sim, "rollback")
    sim.change_version("v3")
    sim.step()  # the operator comes back: v3 starts
    sim.step(analysis=stale, seconds=3600)
    assert sim.status.get("rejectedRevision") is None and sim.status["candidateRevision"] != stale.judged.candidate


# ----------------------------------------------------------------------------- 2: requests run once, forever


def test_an_old_rollback_annotation_never_runs_again_after_twenty_more_requests() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("promote", seconds=3000)
    annotations = {"cutover.dev/rollback": "rb-1"}
    plan = sim.step(requests=tuple(requests_in(annotations)))
    assert plan.status.stable_revision == sim.status["history"][0]["revision"]
    rolled_back_to = plan.status.stable_revision
    for i in range(25):  # pause/resume requests (ignored ones count too), the rollback annotation still set
        action = "pause" if i % 2 else "resume"
        annotations[f"cutover.dev/{action}"] = f"{action}-{i}"
        sim.step(requests=tuple(requests_in(annotations)))
    assert len(sim.status["handledRequests"]) == 20
    assert "rb-1" not in {h["id"] for h in sim.status["handledRequests"]}
    for _ in range(3):
        plan = sim.step(requests=tuple(requests_in(annotations)))
        assert plan.status.stable_revision == rolled_back_to
        assert not [e for e in plan.events if e.reason == "RolledBackByRequest"]


def test_a_stale_full_promote_does_not_promote_a_later_candidate() -> None:
    sim = deployed()
    annotations = {"cutover.dev/promote": "full-1"}
    sim.change_version("v2")
    sim.step()
    plan = sim.step(requests=tuple(requests_in(annotations)))
    assert "Promoted" in [e.reason for e in plan.events]
    for i in range(45):
        annotations["cutover.dev/pause"] = f"p-{i}"
        sim.step(requests=tuple(requests_in(annotations)))
    sim.change_version("v3")
    for _ in range(3):
        plan = sim.step("continue", requests=tuple(requests_in(annotations)))
        assert plan.status.candidate_revision is not None, "a stale promote annotation promoted v3"
        assert "Promoted" not in [e.reason for e in plan.events]
    handled = [e.message for p in sim.plans for e in p.events if e.reason == "RequestPromote"]
    assert handled == ["full-1: candidate promoted"], handled


def test_status_from_an_older_operator_keeps_its_handled_requests_handled() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step(requests=(Request("abort", "a-1"),))
    assert sim.status["phase"] == "RolledBack"
    sim.status.pop("lastHandledRequests")  # as an operator without the field wrote it
    sim.step(requests=(Request("retry", "t-1"),))
    plan = sim.step(requests=(Request("abort", "a-1"), Request("retry", "t-1")))
    assert plan.status.candidate_revision is not None and plan.status.phase == "Progressing"
    assert plan.status.last_handled_requests == {"abort": "a-1", "retry": "t-1"}


def test_rollback_to_the_same_revision_twice_runs_twice() -> None:
    sim = deployed(CANARY)
    first = sim.status["stableRevision"]
    for version in ("v2", "v3"):
        sim.change_version(version)
        sim.step()
        sim.step(requests=(Request("promote", f"full-{version}"),))
    second = sim.status["history"][1]["revision"]
    assert second != first
    for attempt, target in enumerate((first, second, first)):
        plan = sim.step(requests=(Request("rollbackTo", f"{target}@req-{attempt}"),))
        assert plan.status.stable_revision == target, plan.status.handled_requests[0]
        assert plan.status.handled_requests[0].result == f"rolled back to {target}"


# ----------------------------------------------------------------------------- 7: why pods are not ready


def _pod(revision: str, **status: object) -> dict[str, object]:
    return {"metadata": {"name": f"p-{revision}", "labels": {"cutover.dev/revision": revision}}, "status": status}


MISSING_CLAIM = _pod(
    "r1",
    phase="Pending",
    conditions=[
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": '0/7 nodes are available: persistentvolumeclaim "models" not found.',
        }
    ],
)


def test_a_missing_volume_claim_is_named_in_status_not_waiting() -> None:
    sim = Sim.of(CANARY)
    plan = sim.step()
    stable = plan.status.stable_revision
    assert stable is not None
    sim.ready = {stable: 0}
    claim = pods.problems([{**MISSING_CLAIM, "metadata": {"labels": {"cutover.dev/revision": stable}}}])
    sim.now += timedelta(seconds=30)
    plan = reconcile(Inputs(sim.md, {stable: 0}, sim.now, pod_problems=claim))
    assert 'persistentvolumeclaim "models" not found' in plan.status.message
    assert plan.status.message.startswith(f"waiting for pods of revision {stable}: 1 pod Unschedulable")
    ready = {c.type: c for c in plan.status.conditions}["Ready"]
    assert ready.status == "False" and ready.reason == "Unschedulable" and "persistentvolumeclaim" in ready.message
    assert [e.reason for e in plan.events] == ["PodsNotReady"]
    sim.status = plan.status.wire()
    again = reconcile(Inputs(sim.md, {stable: 0}, sim.now + timedelta(seconds=30), pod_problems=claim))
    assert not again.events, "the same problem is told once"


@pytest.mark.parametrize(
    ("pod", "reason", "words"),
    [
        (MISSING_CLAIM, "Unschedulable", 'persistentvolumeclaim "models" not found'),
        (
            _pod(
                "r1",
                phase="Pending",
                containerStatuses=[
                    {
                        "name": "serving",
                        "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x:1"'}},
                    }
                ],
            ),
            "ImagePullBackOff",
            'container serving: Back-off pulling image "x:1"',
        ),
        (
            _pod(
                "r1",
                phase="Running",
                containerStatuses=[
                    {
                        "name": "serving",
                        "restartCount": 5,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                    }
                ],
            ),
            "CrashLoopBackOff",
            "last exit code 137: OOMKilled",
        ),
        (
            _pod(
                "r1",
                phase="Pending",
                initContainerStatuses=[
                    {"name": "fetch-model", "state": {"terminated": {"exitCode": 1, "message": "403 Forbidden"}}}
                ],
            ),
            "InitContainerFailed",
            "init container fetch-model exited with code 1: 403 Forbidden",
        ),
        (
            _pod("r1", phase="Failed", reason="Evicted", message="The node was low on resource: memory."),
            "Failed",
            "Evicted: The node was low on resource: memory.",
        ),
        (
            _pod(
                "r1",
                phase="Running",
                conditions=[{"type": "Ready", "status": "False"}],
                containerStatuses=[{"name": "serving", "restartCount": 3, "state": {"running": {}}}],
            ),
            "NotReady",
            "readiness probe failing; restarted 3 times",
        ),
    ],
)
def test_each_kind_of_stuck_pod_is_explained(pod: dict[str, object], reason: str, words: str) -> None:
    (problem,) = pods.problems([pod, pod]).values()
    assert problem.reason == reason and problem.pods == 2 and words in problem.message, problem


def test_ready_and_starting_pods_are_not_problems() -> None:
    starting = _pod(
        "r1", phase="Pending", containerStatuses=[{"name": "s", "state": {"waiting": {"reason": "ContainerCreating"}}}]
    )
    ready = _pod("r1", phase="Running", conditions=[{"type": "Ready", "status": "True"}])
    assert pods.problems([starting, ready]) == {}


def test_candidate_pods_that_never_start_say_why_and_roll_back_at_the_deadline() -> None:
    sim = deployed()
    sim.change_version("v2")
    plan = sim.step()
    candidate = plan.status.candidate_revision
    assert candidate is not None
    problem = pods.problems([{**MISSING_CLAIM, "metadata": {"labels": {"cutover.dev/revision": candidate}}}])
    stable = plan.status.stable_revision or ""
    for _ in range(10):
        sim.now += timedelta(seconds=400)
        plan = reconcile(Inputs(sim.md, {stable: 3}, sim.now, pod_problems=problem))
        sim.status = plan.status.wire()
        if plan.status.candidate_revision is None:
            break
        assert "candidate pods: 1 pod Unschedulable" in plan.status.message
    assert plan.status.phase == "RolledBack" and plan.status.rejected_revision == candidate
    assert 'persistentvolumeclaim "models" not found' in plan.status.message


# ----------------------------------------------------------------------------- 8: every wait ends


def _run(sim: Sim, verdict: str | None, hours: float, tick: float = 60) -> None:
    for _ in range(int(hours * 3600 / tick)):
        sim.step(verdict, seconds=tick)
        if sim.status and sim.status.get("candidateRevision") is None:
            return


def test_an_analysis_step_without_max_duration_does_not_wait_for_ever() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    _run(sim, "inconclusive", hours=3)
    assert sim.status["phase"] == "RolledBack", sim.status["message"]
    assert any(e.reason == "ProgressDeadlineExceeded" for p in sim.plans for e in p.events)
    assert "last verdict: inconclusive" in sim.status["message"]


def test_a_candidate_at_full_weight_without_a_verdict_does_not_wait_for_ever() -> None:
    sim = deployed(strategy={"type": "canary", "canary": {"steps": [{"setWeight": 100}]}})
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    assert sim.weights() == {"candidate": 100}
    _run(sim, "continue", hours=3)
    assert sim.status["phase"] == "RolledBack" and sim.weights() == {"stable": 100}


def test_metrics_unavailable_past_the_deadline_pause_for_a_human_and_never_roll_back() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    _run(sim, "unavailable", hours=3)
    assert sim.status["candidateRevision"] is not None and sim.status["phase"] == "Paused"
    assert sim.status["paused"] and "metrics unavailable" in sim.status["pauseReason"]
    assert [e.reason for p in sim.plans for e in p.events].count("AnalysisUnavailable") == 1
    plan = sim.step("continue", requests=(Request("resume", "r-1"),))
    assert plan.status.phase == "Progressing" and plan.status.pause_reason == ""


def test_an_indefinite_pause_step_waits_for_a_human_and_says_so() -> None:
    sim = deployed(strategy={"type": "canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}})
    sim.change_version("v2")
    sim.step()
    _run(sim, "continue", hours=5)
    assert sim.status["phase"] == "Paused" and sim.status["candidateRevision"] is not None
    assert "waits for on-call: kubectl cutover promote fraud-scorer" in sim.status["message"]
    assert [e.reason for p in sim.plans for e in p.events].count("AwaitingPromotion") == 1
    plan = sim.step("continue", requests=(Request("promote", "p-1"),))
    assert plan.status.candidate_revision is None and "Promoted" in [e.reason for e in plan.events]


def test_a_stable_revision_that_never_gets_a_ready_pod_fails_with_an_event() -> None:
    sim = Sim.of(CANARY)
    plan = sim.step()
    stable = plan.status.stable_revision or ""
    sim.stuck = {stable}
    for _ in range(10):
        plan = sim.step(seconds=600)
    assert plan.status.phase == "Failed" and "no ready pod" in plan.status.message
    assert [e.reason for p in sim.plans for e in p.events].count("ProgressDeadlineExceeded") == 1


# ----------------------------------------------------------------------------- the post-promotion watch

WATCHED = {"duration": "30m", "shift": 2.0}


def _promoted(action: str = "rollback") -> tuple[Sim, str, str]:
    sim = deployed(analysis={**load(CANARY)["spec"]["analysis"], "postPromotion": {**WATCHED, "action": action}})
    first = sim.status["stableRevision"]
    sim.change_version("v2")
    sim.step()
    sim.step(requests=(Request("promote", "full-1"),))
    second = sim.status["stableRevision"]
    assert second != first and sim.status["postPromotion"]["state"] == "Watching"
    assert sim.status["postPromotion"]["previous"] == first
    return sim, first, second


def test_a_regression_after_promotion_rolls_back_to_the_replaced_revision() -> None:
    sim, first, second = _promoted()
    plan = sim.step(watch=WatchInput(second, False, "no rise since promotion"))
    assert plan.status.stable_revision == second and plan.status.post_promotion.reason == "no rise since promotion"
    plan = sim.step(watch=WatchInput(second, True, f"revision {second} has regressed since promotion: error-rate"))
    assert plan.status.stable_revision == first and plan.status.phase == "RolledBack"
    assert plan.status.rejected_revision == second and plan.status.post_promotion.state == "Regressed"
    assert [e.reason for e in plan.events] == ["PostPromotionRegression"]
    for _ in range(3):  # not rolled out again until the spec changes or on-call retries
        plan = sim.step()
        assert plan.status.stable_revision == first and plan.status.candidate_revision is None


def test_the_watch_ends_quietly_at_its_duration_and_ignores_other_revisions() -> None:
    sim, _, second = _promoted()
    plan = sim.step(watch=WatchInput("0000000000", True, "about another revision"))
    assert plan.status.stable_revision == second and plan.status.post_promotion.state == "Watching"
    plan = sim.step(watch=WatchInput(second, False, "no rise since promotion"), seconds=1800)
    assert plan.status.post_promotion.state == "Passed" and [e.reason for e in plan.events] == ["PostPromotionPassed"]
    plan = sim.step(watch=WatchInput(second, True, "too late"))
    assert plan.status.stable_revision == second


def test_action_none_only_warns() -> None:
    sim, _, second = _promoted(action="none")
    plan = sim.step(watch=WatchInput(second, True, "risen"))
    assert plan.status.stable_revision == second and plan.status.post_promotion.state == "Regressed"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "PostPromotionRegression")]


def test_a_regression_during_the_next_rollout_ends_it_too() -> None:
    sim, first, second = _promoted()
    sim.change_version("v3")
    plan = sim.step()
    assert plan.status.candidate_revision is not None
    plan = sim.step(watch=WatchInput(second, True, "risen"))
    assert plan.status.stable_revision == first and plan.status.candidate_revision is None
    assert plan.status.rejected_revision not in (None, first)
    assert {"PostPromotionRegression"} == {e.reason for e in plan.events}


def test_the_verdict_that_ends_a_rollout_is_the_evidence_status_keeps() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    judged = comparison(sim.md.spec, sim.md.status)
    assert judged is not None
    evidence = AnalysisStatus(verdict="rollback", reason="error-rate failed", metrics=[])
    sim.step(analysis=AnalysisInput(judged, "rollback", "error-rate failed", status=evidence))
    assert sim.status["phase"] == "RolledBack"
    assert sim.status["lastAnalysis"]["verdict"] == "rollback"
    # ... but a verdict about the rollout that a new spec just replaced is not shown for the new one.
    sim.change_version("v3")
    sim.step()
    sim.step("continue")
    stale = comparison(sim.md.spec, sim.md.status)
    assert stale is not None
    sim.change_version("v4")
    sim.step(analysis=AnalysisInput(stale, "rollback", "about v3", status=evidence))
    assert sim.status.get("lastAnalysis") is None and sim.status["phase"] == "Progressing"


def test_kubectl_cutover_status_shows_the_watch() -> None:
    sim, first, second = _promoted()
    lines = kubectl_plugin.status_lines({**sim.doc, "status": sim.status})
    (watch,) = [line for line in lines if line.startswith("Watch:")]
    assert f"Watching {second} until" in watch and f"rollback to {first}" in watch


# ----------------------------------------------------------------------------- from an adversarial review


def test_an_operator_down_longer_than_the_deadline_does_not_roll_back_a_passing_candidate() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    assert sim.status["currentStepIndex"] == 1  # the analysis step
    plan = sim.step("promote", seconds=7200)  # the first pass after two hours away
    assert plan.status.candidate_revision is not None and plan.status.phase == "Progressing"
    assert sim.status["currentStepIndex"] > 1
    assert not [e for e in plan.events if e.reason == "ProgressDeadlineExceeded"]


def test_a_passed_candidate_keeps_scaling_up_whatever_later_verdicts_say() -> None:
    sim = deployed(strategy={"type": "canary", "canary": {"steps": [{"setWeight": 20}]}})
    sim.change_version("v2")
    sim.step()
    sim.stuck = {sim.status["candidateRevision"]}
    sim.step("continue")
    plan = sim.step("promote", seconds=400)
    assert plan.status.promoting and {w.role: w.replicas for w in plan.workloads}["candidate"] == 3
    assert [e.reason for e in plan.events] == ["ScalingUp"]
    plan = sim.step("inconclusive")
    assert plan.status.promoting and {w.role: w.replicas for w in plan.workloads}["candidate"] == 3
    sim.stuck = set()
    sim.step("inconclusive")
    plan = sim.step("inconclusive")
    assert plan.status.candidate_revision is None and "Promoted" in [e.reason for e in plan.events]


def test_gpu_swap_does_not_flap_once_the_freed_gpus_read_as_room() -> None:
    sim = deployed(strategy={**load(CANARY)["spec"]["strategy"], "surge": "auto"})
    sim.change_version("v2")
    sim.capacity = Capacity("nvidia.com/gpu", 1, 0)  # no room for a candidate pod: swap
    plan = sim.step()
    assert {w.role: w.replicas for w in plan.workloads} == {"stable": 2, "candidate": 1}
    for _ in range(4):  # the stable pod it freed makes room; the swap stays
        sim.capacity = Capacity("nvidia.com/gpu", 1, 1)
        plan = sim.step("continue")
        assert {w.role: w.replicas for w in plan.workloads} == {"stable": 2, "candidate": 1}


def test_provider_replicas_with_zero_replicas_asks_for_no_negative_pods() -> None:
    sim = deployed(traffic={"provider": "replicas"})
    sim.doc["spec"]["runtime"]["replicas"] = 0
    sim.change_version("v2")
    for verdict in (None, "continue", "promote"):
        plan = sim.step(verdict, seconds=400)
        assert all(w.replicas >= 0 for w in plan.workloads), plan.workloads


def test_a_scaled_to_zero_model_is_not_a_failure() -> None:
    sim = Sim.of(CANARY)
    sim.doc["spec"]["runtime"]["replicas"] = 0
    for _ in range(10):
        plan = sim.step(seconds=600)
    assert plan.status.phase == "Healthy" and "scaled to 0" in plan.status.message
    assert not [e for p in sim.plans for e in p.events if e.type == "Warning"]


def test_a_stable_that_loses_its_pods_after_a_rollback_turns_failed() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("rollback")
    assert sim.status["phase"] == "RolledBack"
    sim.stuck = {sim.status["stableRevision"]}
    for _ in range(10):
        plan = sim.step(seconds=600)
    assert plan.status.phase == "Failed" and "no ready pod" in plan.status.message
    assert [e.reason for p in sim.plans for e in p.events].count("ProgressDeadlineExceeded") == 1


def test_a_crash_loop_is_told_once_though_its_back_off_and_restarts_change() -> None:
    sim = deployed()
    stable = sim.status["stableRevision"]
    events = []
    for restarts in range(1, 6):
        crash = {
            "name": "serving",
            "restartCount": restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {10 * 2**restarts}s"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        }
        pod = {"metadata": {"labels": {"cutover.dev/revision": stable}}, "status": {"containerStatuses": [crash]}}
        sim.now += timedelta(seconds=30)
        plan = reconcile(Inputs(sim.md, {stable: 2}, sim.now, pod_problems=pods.problems([pod])))
        sim.status = plan.status.wire()
        events += [e for e in plan.events if e.reason == "PodsNotReady"]
        assert "OOMKilled" in plan.status.message and "back-off" not in plan.status.message
    assert len(events) == 1


def test_a_problem_pod_of_a_revision_with_all_its_pods_ready_is_not_reported_every_pass() -> None:
    sim = deployed()
    stable = sim.status["stableRevision"]
    pending = pods.problems([{**MISSING_CLAIM, "metadata": {"labels": {"cutover.dev/revision": stable}}}])
    for _ in range(3):
        sim.now += timedelta(seconds=30)
        plan = reconcile(Inputs(sim.md, {stable: 3}, sim.now, pod_problems=pending))  # a surge pod pending
        sim.status = plan.status.wire()
        assert plan.status.phase == "Healthy" and not plan.events


def test_the_watch_keeps_the_replaced_revision_even_with_no_history_kept() -> None:
    sim = deployed(analysis={**load(CANARY)["spec"]["analysis"], "postPromotion": WATCHED}, revisionHistoryLimit=0)
    first = sim.status["stableRevision"]
    sim.change_version("v2")
    sim.step()
    sim.step(requests=(Request("promote", "full-1"),))
    second = sim.status["stableRevision"]
    plan = sim.step(watch=WatchInput(second, True, "risen"))
    assert plan.status.stable_revision == first


def test_when_stable_has_no_ready_pod_its_share_goes_to_a_revision_that_can_answer() -> None:
    """The invariant the property test holds: no live traffic to a revision without ready pods
    while another can answer; fresh baseline pods (stable's own model) come before the candidate."""
    for baseline, answers in ((False, "candidate"), (True, "baseline")):
        strategy = {"type": "canary", "canary": {"steps": [{"analysis": {}}, {"setWeight": 20}], "baseline": baseline}}
        sim = deployed(strategy=strategy)
        stable = sim.status["stableRevision"]
        sim.change_version("v2")
        sim.step()
        sim.stuck = {stable}
        sim.step("continue")
        plan = sim.step("continue")
        assert sim.weights() == {answers: 100}, (baseline, plan.status.traffic)
