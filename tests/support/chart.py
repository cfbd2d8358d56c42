"""Every switch of the chart (charts/cutover/values.yaml) turned on, as ``--set`` arguments,
derived from values.yaml so a switch added later is turned on too: each boolean set to true, and
each value that is empty by default either given what turns its feature on (``TURNED_ON``) or
named as no switch (``NOT_SWITCHES``, with why). An empty default in neither is an error that
names it, so the tests cannot go on without anyone deciding what it means."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

VALUES = Path(__file__).resolve().parent.parent.parent / "charts" / "cutover" / "values.yaml"

TURNED_ON: dict[str, tuple[str, ...]] = {
    # Two operator Deployments, each with its Lease; one takes the unlabelled objects.
    "operator.shards": ("operator.shards[0].name=a", "operator.shards[0].default=true", "operator.shards[1].name=b"),
    "tracing.otlpEndpoint": ("tracing.otlpEndpoint=http://otel-collector.observability:4318",),
    "defaultAlertRules.notifications": (
        "defaultAlertRules.notifications[0].type=slack",
        "defaultAlertRules.notifications[0].urlSecretRef.name=oncall-webhooks",
        "defaultAlertRules.notifications[0].urlSecretRef.key=slack",
    ),
    "networkPolicy.apiServer.cidrs": ("networkPolicy.apiServer.cidrs={10.0.0.10/32}",),
    "networkPolicy.gateway.from": (
        "networkPolicy.gateway.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=ingress",
    ),
    "networkPolicy.serving.extraIngress": (
        "networkPolicy.serving.extraIngress[0].from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=envoy",
        "networkPolicy.serving.extraIngress[0].ports[0].port=http",
    ),
    "networkPolicy.otlpCollector.to": (
        "networkPolicy.otlpCollector.to[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=observability",
    ),
    "monitoring.dashboards.annotations": ("monitoring.dashboards.annotations.team=ml-platform",),
    "serviceAccount.annotations": ("serviceAccount.annotations.owner=ml-platform",),
    "gateway.tiers": ("gateway.tiers.pro.rate=100", "gateway.tiers.pro.burst=200"),
}
"""Per value empty by default that turns a feature on: the ``--set`` arguments that do."""

NOT_SWITCHES = {
    # Names and images: the defaults are the names.
    "nameOverride",
    "fullnameOverride",
    "serviceAccount.name",
    "operator.image.tag",
    "gateway.image.tag",
    "operator.leaderElection.leaseName",
    "monitoring.dashboards.namespace",
    # Scopes: empty means every namespace (or the release's), which is the widest rendering;
    # narrowed ones are rendered by tests/operator/test_chart_rbac.py and test_chart_monitoring.py.
    "operator.watchNamespaces",
    "gateway.watchNamespaces",
    "defaultAlertRules.namespaces",
    "monitoring.podMonitor.namespaces",
}
"""Values empty by default that name or scope something rather than turn a feature on."""


def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Each value that is not a non-empty mapping, by its dotted path."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


def every_switch() -> tuple[str, ...]:
    """``--set`` arguments that turn on every feature of the chart. Raises LookupError naming each
    value empty by default that is neither in ``TURNED_ON`` nor in ``NOT_SWITCHES``, and each
    entry of theirs that values.yaml no longer has."""
    values = dict(leaves(yaml.safe_load(VALUES.read_text())))
    empty = {path for path, value in values.items() if value in ("", [], {}, None)}
    unknown = sorted(empty - TURNED_ON.keys() - NOT_SWITCHES)
    gone = sorted((TURNED_ON.keys() | NOT_SWITCHES) - empty)
    if unknown or gone:
        raise LookupError(f"values.yaml: say what turns on {unknown} (tests/support/chart.py); gone: {gone}")
    booleans = tuple(f"{path}=true" for path, value in values.items() if isinstance(value, bool))
    return booleans + tuple(arg for args in TURNED_ON.values() for arg in args)
