"""AlertRule actions in the state machine: once per firing, recorded like on-call requests,
never a spec write (the pure machine driven by the Sim)."""

from __future__ import annotations

from datetime import timedelta

from cutover.operator import kubectl_plugin
from cutover.operator.rollout import AlertAction, Request

from .sim import T0, Sim
from .test_rollout import deployed


def fires(revision: str, action: str = "rollback", at: int = 0, rule: str = "errors") -> AlertAction:
    return AlertAction(rule, action, revision, T0 + timedelta(minutes=at), "error rate 3.1x stable (> 1.5)")  # type: ignore[arg-type]


def rolling_out() -> tuple[Sim, str, str]:
    sim = deployed()
    stable = sim.status["stableRevision"]
    sim.change_version("v2")
    sim.step()
    candidate = sim.status["candidateRevision"]
    assert candidate and candidate != stable
    return sim, stable, candidate


def promoted_twice() -> tuple[Sim, str, str]:
    sim = deployed()
    first = sim.status["stableRevision"]
    sim.change_version("v2")
    sim.step()
    sim.step(requests=(Request("promote", "full-1"),))
    second = sim.status["stableRevision"]
    assert second != first
    for _ in range(3):
        sim.step()
    return sim, first, second


def test_a_firing_rollback_rule_rolls_the_candidate_back_once_per_firing() -> None:
    sim, stable, candidate = rolling_out()
    alert = fires(candidate)
    plan = sim.step(alerts=(alert,))
    assert plan.status.candidate_revision is None and plan.status.stable_revision == stable
    assert plan.status.rejected_revision == candidate
    assert "RolledBackByAlert" in [e.reason for e in plan.events]
    handled = plan.status.handled_requests[0]
    assert (handled.action, handled.by, handled.id) == ("rollback", "AlertRule/errors", alert.id)
    assert plan.status.last_handled_alerts == {"errors": alert.id}
    (answer,) = [e for e in plan.events if e.reason == "AlertRollback"]
    assert answer.type == "Normal" and answer.message.startswith("AlertRule/errors ")
    sim.step(requests=(Request("retry", "r-1"),))
    assert sim.status["candidateRevision"] == candidate
    for _ in range(3):  # the same firing, still in the rule's status: acted on already
        plan = sim.step(alerts=(alert,))
        assert plan.status.candidate_revision == candidate
    plan = sim.step(alerts=(fires(candidate, at=10),))  # resolved, then fired again: a new firing
    assert plan.status.candidate_revision is None


def test_a_rollback_rule_firing_for_stable_undoes_the_last_promotion() -> None:
    sim, first, second = promoted_twice()
    plan = sim.step(alerts=(fires(second),))
    assert plan.status.stable_revision == first
    assert plan.status.rejected_revision == second  # not rolled out again without a retry
    assert plan.status.handled_requests[0].result == f"rolled back to {first}"


def test_a_rollback_rule_without_an_earlier_revision_or_for_another_revision_is_answered_ignored() -> None:
    sim = deployed()
    plan = sim.step(alerts=(fires(sim.status["stableRevision"]),))
    assert plan.status.handled_requests[0].result == "ignored: no earlier stable revision in history"
    plan = sim.step(alerts=(fires("0123abcd", rule="other"),))
    assert plan.status.handled_requests[0].result.startswith("ignored: 0123abcd is neither")


def test_a_pause_rule_holds_the_rollout_until_on_call_resumes() -> None:
    sim, _, candidate = rolling_out()
    plan = sim.step(alerts=(fires(candidate, "pause"),))
    assert plan.status.paused and "AlertRule errors firing for" in plan.status.pause_reason
    assert plan.status.phase == "Paused"
    plan = sim.step(requests=(Request("resume", "go-1"),), alerts=(fires(candidate, "pause"),))
    assert not plan.status.paused  # the same firing does not pause again


def test_a_pause_rule_with_nothing_rolling_out_is_answered_ignored() -> None:
    sim = deployed()
    plan = sim.step(alerts=(fires(sim.status["stableRevision"], "pause"),))
    assert plan.status.handled_requests[0].result == "ignored: nothing is rolling out"


def test_a_fallback_serves_the_previous_revision_until_on_call_resumes() -> None:
    sim, first, second = promoted_twice()
    plan = sim.step(alerts=(fires(second, "fallback"),))
    assert plan.status.stable_revision == second  # stable stays stable
    assert plan.status.fallback_revision == first
    assert {w.revision: w.replicas for w in plan.workloads}[first] == sim.md.spec.runtime.replicas
    assert sim.weights() == {"stable": 100}  # the fallback's pods are not ready yet
    plan = sim.step()
    assert sim.weights() == {"previous": 100}
    assert plan.status.phase == "Degraded" and plan.status.message.startswith(f"fallback: revision {first} serves")
    (line,) = [x for x in kubectl_plugin.status_lines({**sim.doc, "status": sim.status}) if x.startswith("Fallback:")]
    assert first in line and "AlertRule errors firing" in line and "kubectl cutover resume" in line
    sim.change_version("v3")  # nothing new rolls out while the fallback serves
    plan = sim.step()
    assert plan.status.candidate_revision is None and sim.weights() == {"previous": 100}
    plan = sim.step(requests=(Request("resume", "ok-1"),))
    assert plan.status.fallback_revision is None and "FallbackEnded" in [e.reason for e in plan.events]
    assert sim.weights().get("stable") == 100 or plan.status.candidate_revision is not None


def test_a_fallback_during_a_rollout_rolls_it_back_first() -> None:
    sim, first, second = promoted_twice()
    sim.change_version("v3")
    sim.step()
    candidate = sim.status["candidateRevision"]
    plan = sim.step(alerts=(fires(second, "fallback"),))
    assert plan.status.candidate_revision is None and plan.status.rejected_revision == candidate
    assert plan.status.fallback_revision == first


def test_a_fallback_on_provider_replicas_moves_the_pool_to_the_previous_revision() -> None:
    sim, first, second = promoted_twice()
    sim.doc["spec"]["traffic"] = {"provider": "replicas"}
    sim.step()
    sim.step(alerts=(fires(second, "fallback"),))
    plan = sim.step()
    replicas = {w.revision: w.replicas for w in plan.workloads}
    assert replicas[second] == 0 and replicas[first] == sim.md.spec.runtime.replicas
    sim.step()
    assert sim.weights() == {"previous": 100}
    sim.step(requests=(Request("resume", "ok-1"),))
    plan = sim.step()
    assert {w.revision: w.replicas for w in plan.workloads}[second] == sim.md.spec.runtime.replicas


def test_a_fallback_is_ignored_without_an_earlier_revision_or_when_that_revision_fires() -> None:
    sim = deployed()
    plan = sim.step(alerts=(fires(sim.status["stableRevision"], "fallback"),))
    assert plan.status.fallback_revision is None
    sim, first, _ = promoted_twice()
    plan = sim.step(alerts=(fires(first, "fallback"),))
    assert plan.status.fallback_revision is None and "is the one firing" in plan.status.handled_requests[0].result


def test_on_call_requests_of_the_same_pass_come_before_alerts() -> None:
    sim, stable, candidate = rolling_out()
    plan = sim.step(requests=(Request("promote", "full-9"),), alerts=(fires(candidate),))
    # promoted by on-call first: the candidate is stable now, so the alert undoes that promotion
    assert [h.by for h in plan.status.handled_requests[:2]] == ["AlertRule/errors", ""]
    assert plan.status.stable_revision == stable


def test_a_change_of_stable_ends_the_fallback() -> None:
    """Found by the property test: on-call rolled back during a fallback, so the fallback
    revision became stable while still named the fallback, and the table gave nobody traffic."""
    sim, first, second = promoted_twice()
    sim.step(alerts=(fires(second, "fallback"),))
    plan = sim.step(requests=(Request("rollback", "rb-1"),))
    assert plan.status.stable_revision == first and plan.status.fallback_revision is None
    assert "FallbackEnded" in [e.reason for e in plan.events]
    assert sum(row.weight for row in plan.status.traffic) == 100
