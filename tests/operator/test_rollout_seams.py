"""The seams inside the rollout package: the frozen state, the traffic providers, the replica
math and the strategy each spec names."""

from __future__ import annotations

import dataclasses

import pytest

from cutover.api.v1alpha1.modeldeployment import ModelDeploymentStatus
from cutover.operator.rollout.state import RolloutState, without_rollout
from cutover.operator.rollout.strategies import AbTest, BlueGreen, Canary, Shadow, strategy_for
from cutover.operator.rollout.traffic import Replicas, Routed, Split
from cutover.operator.rollout.workloads import pool_replicas, share_replicas

from .sim import Sim
from .test_rollout import deployed

COMPUTED_AT_THE_END = {"observed_generation", "conditions", "traffic", "handled_requests"}


def test_the_state_and_the_fields_computed_at_the_end_cover_the_whole_status() -> None:
    # A status field in neither would be reset to its default on every pass.
    state_fields = {f.name for f in dataclasses.fields(RolloutState)}
    assert state_fields.isdisjoint(COMPUTED_AT_THE_END)
    assert state_fields | COMPUTED_AT_THE_END == set(ModelDeploymentStatus.model_fields)


def test_a_status_survives_the_round_trip_through_the_state() -> None:
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    status = sim.step(requests=(sim.annotate("pause", "p1"),)).status
    assert status.candidate_revision and status.paused and status.history and status.handled_requests
    again = RolloutState.of(status).status(
        observed_generation=status.observed_generation,
        conditions=list(status.conditions),
        traffic=list(status.traffic),
        handled_requests=list(status.handled_requests),
    )
    assert again == status and again.wire() == status.wire()


def test_a_misspelt_state_field_is_refused() -> None:
    state = RolloutState.of(ModelDeploymentStatus())
    with pytest.raises(TypeError):
        dataclasses.replace(state, stable_revison="abc")  # type: ignore[call-arg]


def test_ending_a_rollout_clears_its_fields_and_keeps_the_rest() -> None:
    rolling = dataclasses.replace(
        RolloutState.of(ModelDeploymentStatus(stable_revision="s")),
        candidate_revision="c",
        current_step_index=2,
        paused=True,
        pause_reason="on-call",
        promoting=True,
        rejected_revision="r",
    )
    ended = without_rollout(rolling)
    assert ended.candidate_revision is None and ended.current_step_index is None
    assert not ended.paused and not ended.promoting and ended.pause_reason == ""
    assert (ended.stable_revision, ended.rejected_revision) == ("s", "r")


def test_routed_providers_give_stable_the_rest_and_its_share_to_who_can_answer() -> None:
    roles = {"s": "stable", "c": "candidate", "p": "previous"}
    gateway = Routed("gateway")
    assert gateway.weights(roles, {"s": 3, "c": 1}, "s", Split({"c": 10})) == {"c": 10, "s": 90}
    # Stable has no ready pod: the live candidate takes its share too.
    assert gateway.weights(roles, {"c": 1, "p": 2}, "s", Split({"c": 10})) == {"c": 100}
    # Nothing live but the kept previous stable: it answers.
    assert gateway.weights(roles, {"p": 2}, "s", Split()) == {"p": 100}
    assert gateway.mirrors and not gateway.pooled


def test_the_replicas_provider_splits_by_ready_pods_and_copies_nothing() -> None:
    roles = {"s": "stable", "c": "candidate", "p": "previous"}
    pooled = Replicas(pooled=True)
    weights = pooled.weights(roles, {"s": 2, "c": 1, "p": 0}, "s", Split({"c": 50}))
    assert weights == {"s": 67, "c": 33, "p": 0}
    assert pooled.weights(roles, {}, "s", Split()) == {"s": 100}
    preview = Replicas(pooled=False)  # blue/green: the preview stays out of the Service
    assert preview.weights({"s": "stable", "c": "preview"}, {"s": 1, "c": 1}, "s", Split(mirror=100)) == {"s": 100}
    assert not preview.mirrors


def test_replica_math() -> None:
    assert [share_replicas(3, w) for w in (1, 10, 34, 50, 100)] == [1, 1, 2, 2, 3]
    assert [pool_replicas(3, w) for w in (0, 1, 10, 50, 100)] == [0, 1, 1, 2, 3]
    assert share_replicas(0, 50) == 1 and pool_replicas(0, 50) == 1


@pytest.mark.parametrize(
    ("example", "kind"),
    [
        ("modeldeployment-canary.yaml", Canary),
        ("modeldeployment-bluegreen.yaml", BlueGreen),
        ("modeldeployment-shadow.yaml", Shadow),
        ("modeldeployment-abtest.yaml", AbTest),
    ],
)
def test_each_strategy_type_has_its_module(example: str, kind: type) -> None:
    spec = Sim.of(example).md.spec.strategy
    strategy = strategy_for(spec)
    assert isinstance(strategy, kind) and strategy.name == spec.type
