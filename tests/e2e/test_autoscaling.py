"""Autoscaling end to end: real load through the real gateway, real `cutover serve` processes
exporting their in-flight requests, real Prometheus, and the operator deciding from it.

The numbers are scaled to what 2 cores carry: a batch closes 200 ms after its first request
(maxQueueDelay), so a request waits about 100 ms and a rate of R requests per second keeps
about R/10 in flight; with targetInFlight 1, 5 req/s asks for 1 pod and 100 req/s for 10 (the
maxReplicas). The local
runner runs one process per revision whatever its pod count, which is why in-flight requests are
summed over the model (the HPA's External AverageValue metric) rather than averaged per pod.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hack.devstack import Stack, Traffic

from .test_full_stack import (
    dashboards_show_data,
    deployment,
    models,
    nothing_lost,
    ready,
    stack,
    start_traffic,
    status,
    until,
)

__all__ = ["models", "stack"]  # the fixtures, shared with the full-stack tests

pytestmark = pytest.mark.cluster

LOW, HIGH = 5.0, 95.0
"""Requests per second: the steady base, and what is added on top of it for the step."""


def autoscaled(stack: Stack, version: str, model: Path, strategy: dict[str, Any]) -> dict[str, Any]:
    doc = deployment(stack, "autoscaled", version, model, strategy)
    runtime = doc["spec"]["runtime"]
    runtime.pop("replicas")
    runtime["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 10,
        "targetInFlight": 1,
        "scaleDownStabilization": "20s",
    }
    runtime["batching"] = {"maxBatchSize": 512, "maxQueueDelay": "200ms"}
    return doc


def desired(md: dict[str, Any]) -> int:
    return int((status(md).get("autoscaling") or {}).get("desiredReplicas") or 0)


def replicas(stack: Stack) -> dict[str, int]:
    """spec.replicas of each Deployment of the model, by role."""
    found = stack.kube.json("get", "deployments", "-n", stack.namespace, "-l", "cutover.dev/model=autoscaled")
    return {d["metadata"]["labels"]["cutover.dev/role"]: d["spec"]["replicas"] for d in found["items"]}


def test_a_load_step_scales_up_then_down_and_a_canary_takes_its_share(stack: Stack, models: dict[str, Path]) -> None:
    started = time.time()
    canary = {"type": "canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}
    stack.apply(autoscaled(stack, "v1", models["good"], canary))
    until(stack, "autoscaled", lambda m: ready(m) and desired(m) == 1, 120, "v1 Ready on 1 pod")
    base = start_traffic(stack, "autoscaled", rate=LOW)
    step = Traffic(stack.gateway_url, stack.api_key, "autoscaled", rate=HIGH)
    step.start()
    # up: 1 -> 5 -> 10 pods within two sync periods of the load reaching Prometheus (10 is the
    # maxReplicas; whether the recommendation was clamped to it or came to 10 depends on the load
    # the machine could make, so limitedBy is not pinned here: the unit tests pin it)
    until(stack, "autoscaled", lambda m: desired(m) == 10 and replicas(stack) == {"stable": 10}, 90, "up to 10 pods")

    # a canary at 20% of the traffic runs a fifth of the autoscaled count beside it
    stack.apply(autoscaled(stack, "v2", models["improved"], canary))
    until(stack, "autoscaled", lambda m: (status(m).get("canaryWeight") or 0) == 20, 90, "the 20% step")
    assert replicas(stack) == {"stable": 10, "candidate": 2}

    # down: once the step ends, after the 20 s window, to one pod again (the canary's share with it)
    step.stop()
    limits: set[str] = set()

    def down(m: dict[str, Any]) -> bool:
        limits.add((status(m).get("autoscaling") or {}).get("limitedBy", ""))
        return desired(m) == 1

    until(stack, "autoscaled", down, 120, "scaled down to 1 pod")
    assert "ScaleDownStabilization" in limits, limits  # held at 10 while the window had a 10 in it
    assert replicas(stack) == {"stable": 1, "candidate": 1}
    # the operations dashboard's batching row, for the stable and the canary (both batch)
    batching = ("Batch queue depth", "Batch queue wait", "Rows per model call")
    titles = tuple(f"{signal}: {role}" for signal in batching for role in ("stable", "candidate"))
    dashboards_show_data(stack, "autoscaled", started, {"operations": titles})
    nothing_lost(base)
    nothing_lost(step)
