"""Rendered PrometheusRules and the chart's default AlertRules against the real API server, with
the PrometheusRule CRD that hack/cluster installs from the Prometheus Operator's Go module."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from cutover.api.v1alpha1 import AlertRule
from cutover.operator.alerts.render import prometheus_rule
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from .test_alert_render import every_rule, target
from .test_alert_render_chart import CHART, helm

pytestmark = pytest.mark.cluster


def test_every_rendered_rule_applies_and_goes_with_its_alert_rule(kube: Kube, namespace: str) -> None:
    targets = [target("gateway"), target("replicas", name="fraud-scorer-b")]
    owner = every_rule()[0]
    doc = owner.wire() | {"metadata": {"name": owner.metadata.name, "namespace": namespace}}
    kube.apply(doc, namespace=namespace)
    applied = kube.json("get", "alertrule", owner.metadata.name or "", "-n", namespace)
    meta = owner.metadata.model_copy(update={"namespace": namespace, "uid": applied["metadata"]["uid"]})
    rendered = [prometheus_rule(rule.model_copy(update={"metadata": meta}), targets) for rule in every_rule()]
    for i, body in enumerate(rendered[1:], start=1):
        body["metadata"]["name"] = f"{body['metadata']['name']}-{i}"
    kube.apply(*rendered, namespace=namespace)
    names = {item["metadata"]["name"] for item in kube.json("get", "prometheusrules", "-n", namespace)["items"]}
    assert len(names) == len(rendered)
    kube.run("delete", "alertrule", owner.metadata.name or "", "-n", namespace, "--wait=true")
    wait_until(
        lambda: not kube.json("get", "prometheusrules", "-n", namespace)["items"],
        what="the PrometheusRules to be collected with their AlertRule",
    )


def test_the_charts_default_alert_rules_validate_against_the_server(kube: Kube, namespace: str) -> None:
    out = subprocess.run(
        [helm(), "template", "cutover", str(CHART), "--namespace", namespace, "--kubeconfig", kube.kubeconfig,
         "--validate", "--set", "defaultAlertRules.enabled=true", "--show-only", "templates/alertrules.yaml"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    assert len(docs) == 6
    kube.apply(*docs, namespace=namespace, dry_run=True)
    for doc in docs:
        AlertRule.model_validate(doc)


def test_the_charts_prometheus_rule_on_cutover_validates_against_the_server(kube: Kube, namespace: str) -> None:
    """monitoring.prometheusRule (test_chart_prometheus_rules.py) against the real CRD: a rule
    promtool accepts can still be a PrometheusRule the API server refuses."""
    out = subprocess.run(
        [helm(), "template", "cutover", str(CHART), "--namespace", namespace, "--kubeconfig", kube.kubeconfig,
         "--validate", "--set", "monitoring.prometheusRule.enabled=true",
         "--show-only", "templates/prometheusrule.yaml"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    assert [doc["kind"] for doc in docs] == ["PrometheusRule"]
    kube.apply(*docs, namespace=namespace, dry_run=True)
