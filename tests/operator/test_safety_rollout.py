"""Rollouts and the referenced SafetyPolicy: the state machine fails closed while the policy is
missing, invalid or not judged yet (no rollout starts, one in progress holds its weights and
is not rolled back by the deadline), and goes on by itself once the policy is ready."""

from __future__ import annotations

from cutover.operator import kubectl_plugin, safety
from cutover.operator.rollout import SafetyInput

from .sim import Sim

CANARY = "modeldeployment-canary.yaml"
MISSING = safety.readiness("risk", "consumer-chat", None)
READY = safety.readiness("risk", "consumer-chat", safety.PolicySummary(3, "", "True"))
INVALID = safety.readiness("risk", "consumer-chat", safety.PolicySummary(3, "", "False", "Secret pager: not found"))
PENDING = safety.readiness("risk", "consumer-chat", safety.PolicySummary(4, "", None))


def deployed(policy: SafetyInput) -> Sim:
    sim = Sim.of(CANARY, safetyPolicyRef={"name": "consumer-chat"})
    sim.safety = policy
    sim.step()
    sim.step()
    return sim


def conditions(sim: Sim) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in (sim.status or {})["conditions"]}


def reasons_of(sim: Sim) -> list[str]:
    return [e.reason for plan in sim.plans for e in plan.events]


def test_a_ready_policy_is_a_true_condition_and_holds_nothing() -> None:
    sim = deployed(READY)
    assert conditions(sim)["SafetyPolicyReady"]["status"] == "True"
    assert conditions(sim)["SafetyPolicyReady"]["reason"] == "PolicyReady"
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    assert sim.weights() == {"stable": 95, "candidate": 5}
    assert "SafetyPolicyNotReady" not in reasons_of(sim)


def test_the_first_revision_is_deployed_without_the_policy_but_no_rollout_starts() -> None:
    sim = deployed(MISSING)
    stable = sim.status["stableRevision"]
    assert sim.status["phase"] == "Healthy" and sim.weights() == {"stable": 100}
    ready = conditions(sim)["SafetyPolicyReady"]
    assert (ready["status"], ready["reason"]) == ("False", "PolicyNotFound")
    assert "SafetyPolicy risk/consumer-chat not found" in ready["message"]

    sim.change_version("v2")
    for _ in range(5):
        plan = sim.step("promote", seconds=600)
        assert [w.revision for w in plan.workloads] == [stable]
    assert sim.status.get("candidateRevision") is None and sim.weights() == {"stable": 100}
    progressing = conditions(sim)["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "SafetyPolicyNotReady")
    assert "waits for the SafetyPolicy" in sim.status["message"]
    assert reasons_of(sim).count("SafetyPolicyNotReady") == 1, "told once, when it first shows"

    sim.safety = READY
    sim.step()
    assert sim.status.get("candidateRevision") is not None
    assert reasons_of(sim)[-2:] == ["RolloutStarted", "SafetyPolicyReady"]


def test_a_rollout_in_progress_holds_its_weights_past_the_deadline_and_resumes() -> None:
    sim = deployed(READY)
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    assert sim.weights() == {"stable": 95, "candidate": 5}
    sim.safety = INVALID
    for _ in range(10):  # 10 x 10 min: far past progressDeadlineSeconds (1 h)
        sim.step("promote", seconds=600)
    assert sim.weights() == {"stable": 95, "candidate": 5} and sim.status["currentStepIndex"] == 1
    assert sim.status["phase"] == "Paused" and "held: the SafetyPolicy is not ready" in sim.status["message"]
    assert "Secret pager: not found" in sim.status["message"]
    ready = conditions(sim)["SafetyPolicyReady"]
    assert (ready["status"], ready["reason"]) == ("False", "PolicyInvalid")
    assert "RolledBack" not in reasons_of(sim) and "ProgressDeadlineExceeded" not in reasons_of(sim)

    sim.safety = READY
    plan = sim.step("continue", seconds=30)
    assert sim.status["phase"] == "Progressing"
    assert plan.status.last_progress_at == sim.now, "the deadline counts from the end of the hold"
    sim.step("promote", seconds=30)
    assert sim.weights() == {"stable": 80, "candidate": 20} and sim.status["currentStepIndex"] == 3  # moves on
    assert "ProgressDeadlineExceeded" not in reasons_of(sim)


def test_a_rollback_verdict_still_rolls_back_during_a_hold() -> None:
    sim = deployed(READY)
    stable = sim.status["stableRevision"]
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    sim.safety = MISSING
    sim.step("rollback")
    assert sim.status["phase"] == "RolledBack" and sim.status["stableRevision"] == stable
    assert sim.weights() == {"stable": 100}


def test_a_policy_not_judged_yet_holds_as_unknown() -> None:
    sim = deployed(PENDING)
    ready = conditions(sim)["SafetyPolicyReady"]
    assert (ready["status"], ready["reason"]) == ("Unknown", "PolicyPending")
    sim.change_version("v2")
    sim.step()
    assert sim.status.get("candidateRevision") is None


def test_a_new_version_during_a_hold_drops_the_old_rollout_and_starts_nothing() -> None:
    sim = deployed(READY)
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    sim.safety = MISSING
    sim.change_version("v3")
    sim.step()
    assert sim.status.get("candidateRevision") is None and sim.weights() == {"stable": 100}
    assert "RolloutSuperseded" in reasons_of(sim)
    sim.safety = READY
    sim.step()
    assert sim.status.get("candidateRevision") is not None


def test_without_a_reference_there_is_no_condition() -> None:
    sim = Sim.of(CANARY)
    sim.step()
    assert "SafetyPolicyReady" not in conditions(sim)


def test_kubectl_cutover_status_names_the_policy_and_the_hold() -> None:
    sim = deployed(MISSING)
    lines = kubectl_plugin.status_lines({**sim.doc, "status": sim.status})
    assert "Safety:     SafetyPolicy consumer-chat: ready False PolicyNotFound (rollouts hold)" in lines
    sim.safety = READY
    sim.step()
    lines = kubectl_plugin.status_lines({**sim.doc, "status": sim.status})
    assert "Safety:     SafetyPolicy consumer-chat: ready True PolicyReady" in lines
