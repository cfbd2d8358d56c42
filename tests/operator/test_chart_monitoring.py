"""The chart's scraping (``monitoring.serviceMonitor``, ``monitoring.podMonitor``) and
``networkPolicy``: off by default; on, each monitor selects what the components really are (the
labels and named ports of the chart's Services and of the serving pods the operator builds) and
keeps the series' own labels, and the NetworkPolicies admit the callers each component has and
no others. Rendered offline; tests/cluster/test_chart_monitoring.py installs them for real."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from cutover.api import contract
from cutover.operator import builders, cli

from .test_alert_render_chart import rendered
from .test_builders import model, workload

ALL_ON = ("monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true", "networkPolicy.enabled=true")
NAMESPACE = "payments"
"""The release namespace of ``rendered``."""


def by_kind(*values: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The rendered objects by kind, then by name."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in rendered(*values):
        out.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return out


def operator_args(docs: dict[str, dict[str, dict[str, Any]]]) -> argparse.Namespace:
    return cli.parser().parse_args(
        docs["Deployment"]["cutover-cutover-operator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, and matchExpressions with In) selects ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def serving_pod(example: str = "modeldeployment-canary.yaml", **spec: object) -> tuple[Any, dict[str, Any]]:
    """A ModelDeployment and the pod template the operator gives its serving pods."""
    md = model(example, **spec)
    return md, builders.deployment(md, workload(md))["spec"]["template"]


def test_nothing_is_scraped_or_fenced_unless_asked() -> None:
    docs = by_kind()
    assert not {"ServiceMonitor", "PodMonitor", "NetworkPolicy"} & docs.keys()
    assert operator_args(docs).serving_network_policy is None
    assert list(docs["Service"]) == ["cutover-cutover-gateway"], "no metrics Service without its ServiceMonitor"


def test_the_pod_monitor_scrapes_the_serving_pods_the_operator_builds() -> None:
    monitor = next(iter(by_kind(*ALL_ON)["PodMonitor"].values()))
    _, pod = serving_pod()
    assert matches(monitor["spec"]["selector"], pod["metadata"]["labels"])
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    container = pod["spec"]["containers"][0]
    port = next(p for p in container["ports"] if p["name"] == endpoint["port"])
    # cutover serve answers /metrics on its --port (serving/server.py), the port named here.
    assert container["args"][container["args"].index("--port") + 1] == str(port["containerPort"])
    assert endpoint["path"] == "/metrics" == pod["metadata"]["annotations"]["prometheus.io/path"]
    assert monitor["spec"]["namespaceSelector"] == {"any": True}, "namespaces created later are scraped too"


def test_the_pod_monitor_follows_the_watched_namespaces() -> None:
    monitor = next(iter(by_kind(*ALL_ON, "operator.watchNamespaces={a,b}")["PodMonitor"].values()))
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["a", "b"]}
    monitor = next(
        iter(
            by_kind(*ALL_ON, "operator.watchNamespaces={a}", "monitoring.podMonitor.namespaces={c}")[
                "PodMonitor"
            ].values()
        )
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["c"]}


def test_the_pod_monitor_follows_the_shards_namespaces() -> None:
    """A shard with its own namespaces watches those: its serving pods are scraped too."""
    shards = ("operator.shards[0].name=a", "operator.shards[0].namespaces={c}", "operator.shards[1].name=b")
    monitor = next(iter(by_kind(*ALL_ON, "operator.watchNamespaces={a}", *shards)["PodMonitor"].values()))
    assert sorted(monitor["spec"]["namespaceSelector"]["matchNames"]) == ["a", "c"]
    monitor = next(iter(by_kind(*ALL_ON, *shards)["PodMonitor"].values()))
    assert monitor["spec"]["namespaceSelector"] == {"any": True}, "shard b watches every namespace"


def test_service_monitors_select_the_operator_and_gateway_services_by_named_ports() -> None:
    docs = by_kind(*ALL_ON)
    pods = {name: doc["spec"]["template"] for name, doc in docs["Deployment"].items()}
    for name, monitor in docs["ServiceMonitor"].items():
        services = [
            s for s in docs["Service"].values() if matches(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        assert len(services) == 1, name
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [services[0]["metadata"]["namespace"]]}
        endpoint = monitor["spec"]["endpoints"][0]
        service_port = next(p for p in services[0]["spec"]["ports"] if p["name"] == endpoint["port"])
        # The Service's port leads to a named container port of the pods it selects.
        (pod,) = [
            p
            for p in pods.values()
            if matches({"matchLabels": services[0]["spec"]["selector"]}, p["metadata"]["labels"])
        ]
        container = pod["spec"]["containers"][0]
        port = next(p for p in container["ports"] if p["name"] == service_port["targetPort"])
        assert endpoint["path"] == "/metrics"
        if name.endswith("-operator"):
            assert operator_args(docs).metrics_port == port["containerPort"]
    assert sorted(docs["ServiceMonitor"]) == ["cutover-cutover-gateway", "cutover-cutover-operator"]


def test_monitors_keep_the_series_own_namespace_model_and_revision() -> None:
    """The gateway's and the operator's series name the ModelDeployment's namespace, which is not
    the pod's: without honorLabels, Prometheus would replace it with the release namespace and the
    analysis, the alert rules and the dashboards would select nothing."""
    assert "namespace" in contract.GATEWAY_REQUESTS.labels and "namespace" in contract.REVISION_ROLE.labels
    docs = by_kind(*ALL_ON)
    endpoints = [m["spec"]["endpoints"][0] for m in docs["ServiceMonitor"].values()]
    endpoints += [m["spec"]["podMetricsEndpoints"][0] for m in docs["PodMonitor"].values()]
    assert len(endpoints) == 3 and all(e["honorLabels"] is True for e in endpoints)


def test_monitors_carry_the_labels_prometheus_selects_on() -> None:
    monitors = lambda docs: [*docs["ServiceMonitor"].values(), *docs["PodMonitor"].values()]  # noqa: E731
    assert all(m["metadata"]["labels"]["release"] == "kube-prometheus-stack" for m in monitors(by_kind(*ALL_ON)))
    docs = by_kind(*ALL_ON, "monitoring.labels.release=null", "monitoring.labels.prometheus=platform")
    assert all(m["metadata"]["labels"]["prometheus"] == "platform" for m in monitors(docs))
    assert all("release" not in m["metadata"]["labels"] for m in monitors(docs))


def serving_policy(*values: str, **spec: object) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Any]]]]:
    """The NetworkPolicy the operator, run with the chart's arguments, gives a ModelDeployment."""
    docs = by_kind(*ALL_ON, *values)
    ingress = operator_args(docs).serving_network_policy
    md, _ = serving_pod(**spec)
    return builders.network_policy(md, ingress), docs


def admits(policy: dict[str, Any], namespace: dict[str, str], pod: dict[str, str], port: str) -> bool:
    """Whether an ingress policy lets a pod (its namespace's labels and its own) connect to ``port``."""
    for rule in policy["spec"]["ingress"]:
        if port not in [p["port"] for p in rule.get("ports", [{"port": port}])]:
            continue
        for peer in rule.get("from", [{}]):
            in_namespace = (
                matches(peer["namespaceSelector"], namespace)
                if "namespaceSelector" in peer
                else (namespace["kubernetes.io/metadata.name"] == policy["metadata"]["namespace"])
            )
            if in_namespace and matches(peer.get("podSelector", {}), pod):
                return True
    return False


def test_serving_pods_admit_the_gateway_and_prometheus_only() -> None:
    policy, docs = serving_policy()
    md, pod = serving_pod()
    assert policy["metadata"]["namespace"] == md.metadata.namespace
    assert policy["metadata"]["ownerReferences"][0]["uid"] == md.metadata.uid
    assert matches(policy["spec"]["podSelector"], pod["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    named = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} <= named

    release = {"kubernetes.io/metadata.name": NAMESPACE}
    gateway = docs["Deployment"]["cutover-cutover-gateway"]["spec"]["template"]["metadata"]["labels"]
    assert admits(policy, release, gateway, "http") and admits(policy, release, gateway, "grpc")
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    prometheus = {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack-prometheus"}
    assert admits(policy, monitoring, prometheus, "http") and not admits(policy, monitoring, prometheus, "grpc")

    elsewhere = {"kubernetes.io/metadata.name": "other"}
    assert not admits(policy, elsewhere, gateway, "http"), "a pod labelled like the gateway in another namespace"
    assert not admits(policy, release, {"app": "client"}, "http")
    # The candidate's fallback calls the stable revision's pods of the same model, and only those.
    own = pod["metadata"]["labels"]
    other_model = {**own, contract.LABEL_MODEL: "someone-else"}
    ns = {"kubernetes.io/metadata.name": md.metadata.namespace or ""}
    assert admits(policy, ns, own, "http") and not admits(policy, ns, other_model, "http")


def test_serving_pods_without_a_previous_version_fallback_admit_no_serving_pod() -> None:
    policy, _ = serving_policy(fallback={"previousVersion": False, "safeDefault": {"outputs": []}})
    md, pod = serving_pod()
    assert not admits(
        policy, {"kubernetes.io/metadata.name": md.metadata.namespace or ""}, pod["metadata"]["labels"], "http"
    )


def test_serving_pods_admit_the_sources_the_user_adds() -> None:
    rule = "networkPolicy.serving.extraIngress[0]"
    policy, _ = serving_policy(
        f"{rule}.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=envoy",
        f"{rule}.ports[0].port=http",
    )
    assert admits(policy, {"kubernetes.io/metadata.name": "envoy"}, {"app": "envoy"}, "http")


def egress_ports(policy: dict[str, Any]) -> dict[str, set[str]]:
    """Per egress rule, what it allows: its peers' summary -> ports."""
    out: dict[str, set[str]] = {}
    for rule in policy["spec"]["egress"]:
        peers = str(rule.get("to", "anywhere"))
        out.setdefault(peers, set()).update(str(p["port"]) for p in rule["ports"])
    return out


def test_the_gateway_calls_only_dns_the_api_server_serving_pods_and_the_collector() -> None:
    docs = by_kind(
        *ALL_ON, "gateway.watchNamespaces={shop,search}", "tracing.otlpEndpoint=http://otel.observability:4318"
    )
    policy = docs["NetworkPolicy"]["cutover-cutover-gateway"]
    gateway = docs["Deployment"]["cutover-cutover-gateway"]["spec"]["template"]
    assert matches(policy["spec"]["podSelector"], gateway["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ports = {p["name"] for p in gateway["spec"]["containers"][0]["ports"]}
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == ports == {"http", "grpc"}
    assert "from" not in policy["spec"]["ingress"][0], "clients: any source by default"

    _, pod = serving_pod()
    serving = next(rule for rule in policy["spec"]["egress"] if {"port": "http", "protocol": "TCP"} in rule["ports"])
    assert matches(serving["to"][0]["podSelector"], pod["metadata"]["labels"])
    assert matches(serving["to"][0]["namespaceSelector"], {"kubernetes.io/metadata.name": "shop"})
    assert not matches(serving["to"][0]["namespaceSelector"], {"kubernetes.io/metadata.name": "payments"})
    allowed = set().union(*egress_ports(policy).values())
    assert allowed == {"53", "443", "6443", "http", "grpc", "4318"}


@pytest.mark.parametrize(
    ("endpoint", "port"),
    [("http://otel.observability:4318", "4318"), ("https://collector.example.com", "443"), ("http://10.0.0.5", "80")],
)
def test_the_collector_port_comes_from_the_endpoint(endpoint: str, port: str) -> None:
    policy = by_kind(*ALL_ON, f"tracing.otlpEndpoint={endpoint}")["NetworkPolicy"]["cutover-cutover-gateway"]
    assert [str(p["port"]) for p in policy["spec"]["egress"][-1]["ports"]] == [port]


def test_the_operator_is_scraped_and_calls_only_dns_the_api_server_prometheus_and_webhooks() -> None:
    docs = by_kind(*ALL_ON, "networkPolicy.apiServer.cidrs={10.0.0.10/32}")
    policy = docs["NetworkPolicy"]["cutover-cutover-operator"]
    template = docs["Deployment"]["cutover-cutover-operator"]["spec"]["template"]
    assert matches(policy["spec"]["podSelector"], template["metadata"]["labels"])
    (ingress,) = policy["spec"]["ingress"]
    assert [p["port"] for p in ingress["ports"]] == ["metrics"]
    assert [p["name"] for p in template["spec"]["containers"][0]["ports"]] == ["metrics"]
    assert egress_ports(policy) == {
        str(docs["NetworkPolicy"]["cutover-cutover-operator"]["spec"]["egress"][0]["to"]): {"53"},
        "[{'ipBlock': {'cidr': '10.0.0.10/32'}}]": {"443", "6443"},
        str(ingress["from"]): {"9090"},
        "anywhere": {"443"},
    }


@pytest.mark.parametrize("value", ["{not json", '{"from": []}', "[1, 2]"])
def test_the_operator_refuses_serving_ingress_that_is_not_a_list_of_rules(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(["operator", f"--serving-network-policy={value}"])
    assert exited.value.code == 2 and "--serving-network-policy" in capsys.readouterr().err
