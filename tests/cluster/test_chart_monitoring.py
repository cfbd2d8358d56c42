"""The chart with every switch on (tests/support/chart.py derives them from values.yaml), against
the real API server with the Prometheus Operator's CRDs (hack/cluster installs them from its Go
module): `helm lint --strict`, `helm template --validate`, a strict server-side dry run of every
object, a real `helm install` under a release name as long as Helm allows whose ServiceMonitors,
PodMonitor and NetworkPolicies select what is really there, and the operator, run with the
chart's arguments, fencing a ModelDeployment's serving pods."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cutover.operator import cli
from tests.support.chart import every_switch
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from ..conftest import REPO
from .operator_support import Operator
from .test_control_plane import helm
from .test_operator import deploy_v1, fast_canary

pytestmark = pytest.mark.cluster
CHART = str(REPO / "charts" / "cutover")
EVERY_SWITCH = every_switch()
MONITORING_CRDS = ("servicemonitors.monitoring.coreos.com", "podmonitors.monitoring.coreos.com")


@pytest.fixture(scope="module")
def monitoring_crds(kube: Kube) -> None:
    """The ServiceMonitor and PodMonitor CRDs: hack/cluster installs them; a cluster given by
    KUBECONFIG may lack them."""
    if kube.run("get", "crd", *MONITORING_CRDS, check=False).returncode != 0:
        pytest.skip("the Prometheus Operator's CRDs are not installed (hack/cluster up installs them)")


def sets(*values: str) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def template(kube: Kube, namespace: str, *values: str) -> list[dict[str, Any]]:
    """`helm template --validate` against the live API server, parsed."""
    out = subprocess.run(
        [
            helm(),
            "template",
            "cutover",
            CHART,
            "-n",
            namespace,
            "--kubeconfig",
            kube.kubeconfig,
            "--validate",
            *sets(*values),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_the_chart_lints_and_validates_with_every_switch_on(kube: Kube, namespace: str, monitoring_crds: None) -> None:
    lint = subprocess.run(
        [helm(), "lint", "--strict", CHART, "--kube-version", "1.36.3", *sets(*EVERY_SWITCH)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = template(kube, namespace, *EVERY_SWITCH)
    kinds = {doc["kind"] for doc in docs}
    assert {"ServiceMonitor", "PodMonitor", "NetworkPolicy", "PrometheusRule", "ValidatingAdmissionPolicy"} <= kinds
    # helm --validate checks built-in kinds only; the API server checks the custom resources'
    # schemas too, and strict field validation refuses a field the CRD does not know.
    kube.apply(*docs, namespace=namespace, dry_run=True)


def test_an_unknown_monitor_field_is_refused(kube: Kube, namespace: str, monitoring_crds: None) -> None:
    """The dry run above can fail: a misspelt endpoint field is refused by the CRD's schema."""
    (monitor,) = [d for d in template(kube, namespace, *EVERY_SWITCH) if d["kind"] == "PodMonitor"]
    monitor["spec"]["podMetricsEndpoints"][0]["honourLabels"] = True
    refused = kube.apply(monitor, namespace=namespace, dry_run=True, check=False)
    assert refused.returncode != 0 and "honourLabels" in refused.stderr


@pytest.fixture
def release(kube: Kube, namespace: str, monitoring_crds: None) -> Iterator[str]:
    """The chart installed with every switch on into the test's namespace (its cluster-wide RBAC
    named after the release, so it is unique), uninstalled at teardown. The release's name is as
    long as Helm allows (53 characters), so every name the chart makes from it is at its longest."""
    name = f"{namespace}-{'long-release-name-' * 3}"[:53].rstrip("-")
    command = [helm(), "--kubeconfig", kube.kubeconfig, "-n", namespace]
    try:
        installed = subprocess.run(
            [*command, "install", name, CHART, *sets(*EVERY_SWITCH)], capture_output=True, text=True
        )
        # No warning either: the API server warns of a Deployment name too long for its pods' hostnames.
        assert installed.returncode == 0 and "Warning" not in installed.stderr, installed.stderr
        yield name
    finally:
        # A failed install leaves its cluster-wide objects too (ClusterRoles, admission policy).
        subprocess.run([*command, "uninstall", name, "--wait=false"], check=False, capture_output=True)


def selected(kube: Kube, kind: str, namespace: str, selector: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects of ``kind`` in ``namespace`` that a matchLabels selector selects, as the API
    server finds them."""
    labels = ",".join(f"{key}={value}" for key, value in selector["matchLabels"].items())
    items: list[dict[str, Any]] = kube.json("get", kind, "-n", namespace, "-l", labels)["items"]
    return items


def component(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    """The first Deployment of one of the release's components (``operator``: its first shard)."""
    deployments = kube.json("get", "deployments", "-n", namespace, "-l", f"app.kubernetes.io/component={name}")
    return sorted(deployments["items"], key=lambda d: str(d["metadata"]["name"]))[0]


def test_helm_install_makes_monitors_and_policies_that_select_the_real_objects(
    kube: Kube, namespace: str, release: str
) -> None:
    monitors = kube.json("get", "servicemonitors", "-n", namespace)["items"]
    assert sorted(m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors) == ["gateway", "operator"]
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (service,) = selected(kube, "services", namespace, monitor["spec"]["selector"])
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]] and endpoint["honorLabels"]
        # The Service reaches pods that name the port it targets.
        pods = selected(kube, "pods", namespace, {"matchLabels": service["spec"]["selector"]})
        target = next(p["targetPort"] for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
        assert pods and all(target in [p["name"] for p in pod["spec"]["containers"][0]["ports"]] for pod in pods)

    (pod_monitor,) = kube.json("get", "podmonitors", "-n", namespace)["items"]
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}

    account = f"system:serviceaccount:{namespace}:{release}-cutover-operator"
    can = kube.run("auth", "can-i", "patch", "networkpolicies.networking.k8s.io", "-n", "default", "--as", account)
    assert can.stdout.strip() == "yes", "the operator applies the serving pods' NetworkPolicies"

    policies = {
        p["metadata"]["labels"]["app.kubernetes.io/component"]: p
        for p in kube.json("get", "networkpolicies", "-n", namespace)["items"]
    }
    assert sorted(policies) == ["gateway", "operator"]
    for part, policy in policies.items():
        pods = selected(kube, "pods", namespace, policy["spec"]["podSelector"])
        assert pods and all(p["metadata"]["labels"]["app.kubernetes.io/component"] == part for p in pods)


def test_the_operator_fences_each_model_deployments_serving_pods(
    kube: Kube, namespace: str, release: str, tmp_path: Path
) -> None:
    """The operator, run with the arguments the chart gives it, makes a NetworkPolicy in the
    ModelDeployment's namespace that selects exactly its serving pods, which the PodMonitor
    selects too; the ModelDeployment owns it."""
    deployment = component(kube, namespace, "operator")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    flag = next(a for a in args if a.startswith("--serving-network-policy="))
    assert cli.parser().parse_args(args).serving_network_policy
    operator = Operator(kube, namespace, tmp_path, args=[flag]).start()
    try:
        doc = fast_canary("fenced")
        deploy_v1(kube, namespace, doc)
        policy = wait_until(
            lambda: kube.run("get", "networkpolicy", "fenced", "-n", namespace, "-o", "json", check=False).stdout,
            what="the ModelDeployment's NetworkPolicy",
        )
    finally:
        operator.stop()
    policy = yaml.safe_load(policy)
    model = kube.json("get", "md", "fenced", "-n", namespace)
    assert policy["metadata"]["ownerReferences"][0]["uid"] == model["metadata"]["uid"]
    fenced = selected(kube, "pods", namespace, policy["spec"]["podSelector"])
    serving = kube.json("get", "pods", "-n", namespace, "-l", "cutover.dev/model=fenced")["items"]
    assert fenced and {p["metadata"]["name"] for p in fenced} == {p["metadata"]["name"] for p in serving}
    (pod_monitor,) = kube.json("get", "podmonitors", "-n", namespace)["items"]
    assert len(selected(kube, "pods", namespace, pod_monitor["spec"]["selector"])) == len(serving)
    gateway = component(kube, namespace, "gateway")
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert any(
        peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": namespace}
        and all(gateway_labels.get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    )


def test_every_switch_turns_on_and_off_by_helm_upgrade_and_uninstall_leaves_nothing(
    kube: Kube, namespace: str, monitoring_crds: None
) -> None:
    """A release made with the defaults takes every switch by `helm upgrade` and gives them back
    (no field the API server keeps immutable changes on the way), and `helm uninstall` removes
    every object of the release, in its namespace and cluster-wide."""
    name = f"up-{namespace}"
    command = [helm(), "--kubeconfig", kube.kubeconfig, "-n", namespace]
    kinds = "all,configmaps,networkpolicies,servicemonitors,podmonitors,prometheusrules,alertrules,roles,rolebindings"
    cluster_kinds = "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings"
    mine = f"app.kubernetes.io/instance={name}"
    try:
        for step in (["install"], ["upgrade", *sets(*EVERY_SWITCH)], ["upgrade", "--reset-values"]):
            done = subprocess.run([*command, *step[:1], name, CHART, *step[1:]], capture_output=True, text=True)
            assert done.returncode == 0, f"helm {step[0]}: {done.stderr}"
            if "--reset-values" in step:
                assert not kube.json("get", "servicemonitors,networkpolicies", "-n", namespace, "-l", mine)["items"]
    finally:
        subprocess.run([*command, "uninstall", name, "--wait"], check=False, capture_output=True)
    assert not kube.json("get", kinds, "-n", namespace, "-l", mine)["items"]
    assert not kube.json("get", cluster_kinds, "-l", mine)["items"]
