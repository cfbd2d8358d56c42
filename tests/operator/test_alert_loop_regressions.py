"""Regressions found by running the AlertRule loop on a real control plane
(tests/cluster/test_alerts.py), each pinned here without a cluster."""

from __future__ import annotations

from cutover.operator.alerts.render import prometheus_rule
from cutover.operator.kube import path

from .test_alert_render import NAMESPACE, every_rule, target


def test_the_client_knows_the_path_of_every_kind_the_alert_loop_writes() -> None:
    # The loop writes the AlertRule's status and applies the rendered PrometheusRule; the client
    # raised KeyError for both kinds, so no evaluation ever finished.
    rule = every_rule()[0]
    rendered = prometheus_rule(rule, [target()])
    name = rendered["metadata"]["name"]
    assert path(rendered["apiVersion"], rendered["kind"], NAMESPACE, name) == (
        f"/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/prometheusrules/{name}"
    )
    assert path(rule.api_version, rule.kind, NAMESPACE, "r") == (
        f"/apis/cutover.dev/v1alpha1/namespaces/{NAMESPACE}/alertrules/r"
    )
