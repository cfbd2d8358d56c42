"""What the autoscaler reads from Prometheus: per metric with a target, the sum of the per-pod
values over the pods of the revisions that take live traffic, and how many pods reported.

- ``inFlight``: the serving pods' ``cutover_serving_in_flight`` (one series per pod), by the
  contract's revision labels, averaged over :data:`WINDOW` and summed over the model (the
  autoscaler holds the sum to ``targetInFlight`` per pod);
- ``gpuUtilization``: NVIDIA DCGM exporter's ``DCGM_FI_DEV_GPU_UTIL`` (one series per GPU,
  labelled with the ``namespace`` and ``pod`` it is allocated to), averaged per pod; the pods
  are found by name (``<modeldeployment>-<revision>-...``, what the Deployments make).

The HPA averages over the pods of its scale target; the operator's target is the model, so the
average is over every pod that serves live traffic (stable and candidate during a canary, as
an HPA on an Argo Rollout sees them), not mirrored or kept pods whose load says nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cutover.analysis import MetricProvider, MetricsUnavailable
from cutover.api import contract
from cutover.api.v1alpha1 import ModelDeployment

from .alerts.queries import string_literal
from .builders import child_name
from .rollout.autoscaling import Load, Metric, Reading, targets

WINDOW = "30s"
"""The in-flight gauge is averaged over this window (two sync periods): sampled at one scrape,
it swings from the whole batch to nothing as batches close."""


def queries(md: ModelDeployment, revisions: Sequence[str]) -> dict[Metric, str]:
    """Per metric the autoscaling spec targets, the PromQL vector of per-pod values."""
    spec = md.spec.runtime.autoscaling
    if spec is None:
        return {}
    namespace = string_literal(md.metadata.namespace or "")
    out: dict[Metric, str] = {}
    for metric in targets(spec):
        if metric == "inFlight":
            chosen = string_literal("|".join(re.escape(r) for r in revisions))
            model = string_literal(md.spec.model.name)
            selector = f"{contract.SERVING_IN_FLIGHT.sample}{{namespace={namespace},model={model},revision=~{chosen}}}"
            out[metric] = f"avg_over_time({selector}[{WINDOW}])"
        else:
            pods = string_literal(f"({'|'.join(re.escape(child_name(md, r)) for r in revisions)})-.+")
            out[metric] = f"avg by (pod) ({contract.GPU_UTILIZATION}{{namespace={namespace},pod=~{pods}}})"
    return out


async def read(provider: MetricProvider, md: ModelDeployment, revisions: Sequence[str], pods: int, at: float) -> Load:
    """The load on ``revisions`` (the live ones) at ``at``: ``pods`` is their ready pods. A
    metric with no series reads as None; Prometheus unreachable as every metric None, with why."""
    vectors = queries(md, revisions)
    readings: dict[Metric, Reading | None] = {}
    for metric, vector in vectors.items():
        try:
            total = await provider.instant(f"sum({vector})", at)  # empty, not 0, without a series
            count = await provider.instant(f"count({vector})", at) if total else {}
        except MetricsUnavailable as err:
            return Load(dict.fromkeys(vectors), pods, str(err))
        reporting = int(sum(count.values()))
        readings[metric] = Reading(metric, sum(total.values()), reporting) if reporting else None
    return Load(readings, pods)
