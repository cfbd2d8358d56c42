"""The role series (``cutover_revision_role``) that rendered PrometheusRules join on: one sample
per row of the traffic table, gone when the revision leaves it or its ModelDeployment is gone."""

from __future__ import annotations

from prometheus_client import REGISTRY

from cutover.api.contract import REVISION_ROLE
from cutover.operator import metrics

from .sim import Sim


def roles(namespace: str) -> dict[str, str]:
    """revision -> role of the role series exported for ``namespace`` (value 1 each)."""
    out = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == REVISION_ROLE.sample and sample.labels["namespace"] == namespace:
                assert sample.value == 1.0 and sample.labels["model"] == "fraud-scorer"
                out[sample.labels["revision"]] = sample.labels["role"]
    return out


def test_roles_follow_the_traffic_table_through_a_rollout_and_go_with_the_object() -> None:
    sim = Sim.of("modeldeployment-canary.yaml")
    sim.doc["metadata"]["namespace"] = "roles-test"
    sim.step()
    metrics.observe(sim.md, sim.step(), None, 0.001)
    stable = sim.md.status.stable_revision if sim.md.status else None
    assert stable and roles("roles-test") == {stable: "stable"}

    sim.change_version("v2")
    sim.step()
    plan = sim.step("continue")
    metrics.observe(sim.md, plan, None, 0.001)
    candidate = plan.status.candidate_revision
    assert candidate and roles("roles-test") == {stable: "stable", candidate: "candidate"}

    while sim.md.status and sim.md.status.candidate_revision:
        plan = sim.step("promote")
    metrics.observe(sim.md, plan, None, 0.001)
    assert roles("roles-test") == {candidate: "stable", stable: "previous"}, "its pods are kept a while"
    metrics.observe(sim.md, sim.step(seconds=3600), None, 0.001)
    assert roles("roles-test") == {candidate: "stable"}, "the old stable revision is no longer live"

    metrics.forget("roles-test", "fraud-scorer")
    assert roles("roles-test") == {}
