"""The chart's RBAC as rendered: where the operator's grants land for each way of choosing its
namespaces, and the persona switches. What the grants are is checked against the operator's own
requests on the real API server (tests/cluster/test_rbac.py)."""

from __future__ import annotations

from typing import Any

from .test_alert_render_chart import rendered

OPERATOR = "cutover-cutover-operator"


def operator_roles(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The operator's ClusterRole, and its Roles' rules by namespace (leader election aside)."""
    cluster = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == OPERATOR)
    roles = {
        d["metadata"]["namespace"]: d["rules"]
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == OPERATOR
    }
    bound = {
        d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == OPERATOR
    }
    assert bound == set(roles), "every Role bound, in its own namespace"
    return cluster, roles


def test_watching_every_namespace_is_one_cluster_role() -> None:
    cluster, roles = operator_roles(rendered())
    assert not roles
    resources = {r for rule in cluster["rules"] for r in rule["resources"]}
    assert {"modeldeployments", "deployments", "secrets", "nodes"} <= resources


def test_watched_namespaces_get_roles_and_the_cluster_role_keeps_only_cluster_reads() -> None:
    cluster, roles = operator_roles(rendered("operator.watchNamespaces={a,b}"))
    everywhere, _ = operator_roles(rendered())
    assert cluster["rules"] == [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list", "watch"]}]
    assert sorted(roles) == ["a", "b"]
    assert roles["a"] == roles["b"] == everywhere["rules"][1:]


def test_shards_namespaces_are_granted_and_a_shard_watching_everything_makes_it_cluster_wide() -> None:
    _, roles = operator_roles(
        rendered(
            "operator.watchNamespaces={x}",
            "operator.shards[0].name=a",
            "operator.shards[1].name=gpu",
            "operator.shards[1].namespaces={vision,x}",
        )
    )
    assert sorted(roles) == ["vision", "x"]
    cluster, roles = operator_roles(
        rendered("operator.shards[0].name=a", "operator.shards[1].name=gpu", "operator.shards[1].namespaces={vision}")
    )
    assert not roles and len(cluster["rules"]) > 1


def test_no_operator_role_lists_or_watches_secrets() -> None:
    for docs in (rendered(), rendered("operator.watchNamespaces={a}")):
        cluster, roles = operator_roles(docs)
        for rules in [cluster["rules"], *roles.values()]:
            for rule in rules:
                assert "secrets" not in rule["resources"] or not {"list", "watch"} & set(rule["verbs"])


def named(*values: str) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in rendered(*values)}


def test_persona_switches() -> None:
    personas = {("ClusterRole", f"cutover-cutover-{persona}") for persona in ("view", "edit", "oncall")}
    policy = {
        (kind, "cutover-cutover-oncall") for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    }
    assert personas | policy <= named()
    without_policy = named("rbac.personas.oncallAdmissionPolicy=false")
    assert personas <= without_policy and not policy & without_policy
    assert not (personas | policy) & named("rbac.personas.enabled=false")
