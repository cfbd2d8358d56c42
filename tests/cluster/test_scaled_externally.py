"""An HPA on a revision's Deployment owns its replicas: on the real control plane the operator
finds it, says so, and lets go of the field without the count falling back to 1."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from .operator_support import Operator
from .test_operator import condition, deploy_v1, fast_canary, md

pytestmark = pytest.mark.cluster


def replicas_owners(deployment: dict[str, Any]) -> set[str]:
    """The field managers that own spec.replicas."""
    return {
        entry["manager"]
        for entry in deployment["metadata"].get("managedFields", [])
        if "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
    }


def deployment(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kube.json("get", "deployment", name, "-n", namespace, "--show-managed-fields")
    return found


def test_an_hpa_takes_the_replicas_over(kube: Kube, namespace: str, operator: Operator) -> None:
    doc = fast_canary()
    runtime = doc["spec"]["runtime"]
    runtime.pop("replicas")
    runtime["autoscaling"] = {"minReplicas": 3, "maxReplicas": 6, "targetInFlight": 5}
    stable = deploy_v1(kube, namespace, doc)
    name = f"ranker-{stable}"
    before = deployment(kube, namespace, name)
    assert before["spec"]["replicas"] == 3 and "cutover" in replicas_owners(before)
    active = condition(md(kube, namespace, "ranker"), "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "MetricMissing")  # no metrics: it holds 3

    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "ranker"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 3,
            "maxReplicas": 8,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}],
        },
    }
    hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] = 80
    kube.apply(hpa, namespace=namespace)

    def released() -> dict[str, Any] | None:
        found = deployment(kube, namespace, name)
        return found if "cutover" not in replicas_owners(found) else None

    after = wait_until(released, 60, "the operator to let go of spec.replicas")
    assert after["spec"]["replicas"] == 3  # claimed by the handover manager, not reset to 1
    body = md(kube, namespace, "ranker")
    assert body["status"]["scaledExternally"] == [name]
    assert "autoscaling" not in body["status"]
    active = condition(body, "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "ScaledExternally")
    assert replicas_owners(after) == {"cutover-handover"}  # until the HPA writes it; never the operator again
