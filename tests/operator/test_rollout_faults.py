"""Faults reproduced from the field (issue 12), each pinned at the state machine."""

from __future__ import annotations

from datetime import timedelta

from cutover.operator.rollout import AnalysisInput, Inputs, Request, comparison, reconcile, requests_in

from .sim import Sim
from .test_rollout import CANARY, deployed


def _verdict_about_stored_status(sim: Sim, verdict: str) -> AnalysisInput:
    """What the operator's verdict source returns: a verdict about the rollout in the stored status."""
    md = sim.md
    judged = comparison(md.spec, md.status)
    assert judged is not None
    return AnalysisInput(judged, verdict, f"{verdict} for {judged.candidate}")  # type: ignore[arg-type]


def _reconcile_with(sim: Sim, analysis: AnalysisInput, seconds: float = 30) -> None:
    sim.now += timedelta(seconds=seconds)
    plan = reconcile(Inputs(sim.md, dict(sim.ready), sim.now, analysis))
    sim.plans.append(plan)
    sim.status = plan.status.wire()
    sim.ready = {w.revision: w.replicas for w in plan.workloads}


# ----------------------------------------------------------------------------- 1: verdicts name their pair


def test_a_rollback_verdict_about_v2_does_not_reject_v3_pushed_in_the_same_pass() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    v2 = sim.status["candidateRevision"]
    stale = _verdict_about_stored_status(sim, "rollback")  # computed from the status that still says v2
    sim.change_version("v3")  # a fix pushed through GitOps while the verdict was being read
    _reconcile_with(sim, stale)
    status = sim.status
    v3 = status["candidateRevision"]
    assert v3 not in (None, v2), status
    assert status.get("rejectedRevision") is None and status["phase"] == "Progressing"
    assert not [e for e in sim.plans[-1].events if e.reason == "AnalysisFailed"]
    # The same verdict does not judge v3 on a later pass either.
    _reconcile_with(sim, stale)
    assert sim.status["candidateRevision"] == v3 and sim.status.get("rejectedRevision") is None


def test_verdicts_about_another_baseline_or_an_earlier_attempt_are_ignored() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    first_attempt = _verdict_about_stored_status(sim, "promote")
    sim.step("rollback")
    assert sim.status["rejectedRevision"] == sim.status["history"][0]["revision"] or sim.status["rejectedRevision"]
    sim.step(requests=(sim.annotate("retry", "retry-1"),))  # the same candidate, a new attempt
    assert sim.status["candidateRevision"] == first_attempt.judged.candidate
    index = sim.status["currentStepIndex"]
    for _ in range(3):  # the first attempt's promote verdict moves nothing in the second attempt
        _reconcile_with(sim, first_attempt, seconds=400)
        assert sim.status["candidateRevision"] == first_attempt.judged.candidate
    assert sim.status["currentStepIndex"] <= max(index, 1)
    wrong_baseline = AnalysisInput(
        first_attempt.judged.__class__(first_attempt.judged.candidate, "0123456789", first_attempt.judged.started_at),
        "rollback",
    )
    _reconcile_with(sim, wrong_baseline)
    assert sim.status["candidateRevision"] is not None and sim.status.get("rejectedRevision") is None


def test_a_verdict_read_while_the_operator_was_down_applies_only_to_its_own_candidate() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    stale = _verdict_about_stored_status(sim, "rollback")
    sim.change_version("v3")
    sim.step()  # the operator comes back: v3 starts
    _reconcile_with(sim, stale, seconds=3600)
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
