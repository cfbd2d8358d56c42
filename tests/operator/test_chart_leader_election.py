"""The chart's operator: two replicas electing a leader on a Lease that its RBAC lets them hold,
with the chart's settings reaching `cutover operator` as valid flags; values that would let two
operators act at once, or leave no margin between renew deadline and lease duration, fail to
render."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from cutover.operator import cli

from .test_alert_render_chart import rendered


def by_kind(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    return next(doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"].endswith(suffix))


def test_two_replicas_elect_a_leader_on_a_lease_their_role_grants() -> None:
    docs = rendered()
    operator = by_kind(docs, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    args = cli.parser().parse_args(operator["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.leader_elect and args.leader_elect_resource_namespace == "payments"
    timing = (args.leader_elect_lease_duration, args.leader_elect_renew_deadline, args.leader_elect_retry_period)
    assert timing == (10, 7, 2)
    role = by_kind(docs, "Role", "-leader-election")
    assert role["metadata"]["namespace"] == "payments"
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]} in role["rules"]
    assert {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [args.leader_elect_resource_name],
        "verbs": ["get", "update"],
    } in role["rules"]
    binding = by_kind(docs, "RoleBinding", "-leader-election")
    account = operator["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"] and binding["subjects"][0]["name"] == account


def test_one_replica_without_leader_election_is_recreated() -> None:
    docs = rendered("operator.replicas=1", "operator.leaderElection.enabled=false")
    operator = by_kind(docs, "Deployment", "-operator")
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [doc for doc in docs if doc["kind"] == "Role"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (("operator.leaderElection.enabled=false",), "operator.replicas above 1 needs operator.leaderElection"),
        (("operator.leaderElection.renewDeadlineSeconds=10",), "retryPeriodSeconds < renewDeadlineSeconds <"),
        (("operator.leaderElection.retryPeriodSeconds=7",), "retryPeriodSeconds < renewDeadlineSeconds <"),
    ],
)
def test_values_that_let_two_operators_act_at_once_fail_to_render(values: tuple[str, ...], message: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        rendered(*values)
    assert message in refused.value.stderr
