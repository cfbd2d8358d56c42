"""GPU capacity preflight: how many more pods of a given shape the cluster can place now.

Computed from node allocatable and the requests of the pods already bound to each node, the
way the scheduler's resource fit does, for the one extended resource a serving pod needs
(``nvidia.com/gpu`` or a MIG slice such as ``nvidia.com/mig-1g.10gb``), honouring the GPU
product and memory a ModelDeployment asks for. The rollout reports the result as the
GPUCapacity condition instead of leaving pods Pending without a word.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .rollout import Capacity

TERMINAL = ("Succeeded", "Failed")


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def free_pods(
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    resource: str,
    per_pod: int,
    product: str | None = None,
    min_memory_mib: int | None = None,
    reserved: dict[str, int] | None = None,
) -> Capacity:
    """How many more pods requesting ``per_pod`` of ``resource`` fit. ``reserved`` counts
    requests of our own pods per node that are about to go away and should count as free
    (none by default)."""
    used: dict[str, int] = defaultdict(int)
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if not node or pod.get("status", {}).get("phase") in TERMINAL:
            continue
        for container in pod["spec"].get("containers", []):
            used[node] += _quantity(container.get("resources", {}).get("requests", {}).get(resource, 0))
    fits = total = 0
    eligible = 0
    for node in nodes:
        labels = node.get("metadata", {}).get("labels", {})
        if node.get("spec", {}).get("unschedulable"):
            continue
        if product and labels.get("nvidia.com/gpu.product") != product:
            continue
        if min_memory_mib and _quantity(labels.get("nvidia.com/gpu.memory", 0)) < min_memory_mib:
            continue
        allocatable = _quantity(node.get("status", {}).get("allocatable", {}).get(resource, 0))
        if not allocatable:
            continue
        eligible += 1
        name = node["metadata"]["name"]
        free = allocatable - used[name] + (reserved or {}).get(name, 0)
        total += allocatable
        fits += max(0, free) // per_pod
    where = f" on nodes with {product}" if product else ""
    detail = f"{eligible} eligible nodes{where}, {total} {resource} allocatable, {sum(used.values())} requested"
    return Capacity(resource=resource, per_pod=per_pod, free_pods=fits, detail=detail)
