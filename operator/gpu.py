"""GPU capacity preflight: how many more pods of a given shape the cluster can place now.

Computed from node allocatable and the requests of the pods already bound to each node, the
way the scheduler's resource fit does, for the one extended resource a serving pod needs
(``nvidia.com/gpu``, a MIG slice such as ``nvidia.com/mig-1g.10gb``, or a shared replica of
either), honouring the GPU product, memory and sharing a ModelDeployment asks for. The rollout
reports the result as the GPUCapacity condition instead of leaving pods Pending without a word.

GPU sharing follows the NVIDIA device plugin: with time-slicing or MPS configured, a node
advertises each GPU as several replicas, and GPU feature discovery labels the node
``nvidia.com/gpu.sharing-strategy=time-slicing`` (or ``mps``; ``none`` otherwise). cutover
asks for the renamed resource, ``nvidia.com/gpu.shared`` (``nvidia.com/mig-<profile>.shared``),
which the plugin advertises with ``renameByDefault: true``: only then can a pod tell a shared
replica from a whole GPU (without renaming both are ``nvidia.com/gpu``), so a ModelDeployment
that asks for no sharing never gets a slice of someone else's GPU by accident.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .rollout import Capacity

TERMINAL = ("Succeeded", "Failed")
SHARING_LABEL = "nvidia.com/gpu.sharing-strategy"
"""Node label GPU feature discovery sets: none, time-slicing or mps."""
SHARING_STRATEGIES = {"timeSlicing": "time-slicing", "mps": "mps"}
"""runtime.gpu.sharing -> the value of SHARING_LABEL on nodes that share GPUs that way."""
SHARED_SUFFIX = ".shared"
"""Suffix of a shared replica's resource name (device plugin ``renameByDefault: true``)."""
PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"


def resource(gpu: dict[str, Any] | None) -> tuple[str, int] | None:
    """The extended resource and count each pod requests for ``runtime.gpu`` (wire form), if
    any: ``nvidia.com/gpu``, ``nvidia.com/mig-<profile>``, or either with ``.shared`` when the
    GPU is shared by time-slicing or MPS."""
    if not gpu or not gpu.get("count"):
        return None
    name = f"nvidia.com/mig-{gpu['migProfile']}" if gpu.get("migProfile") else "nvidia.com/gpu"
    if gpu.get("sharing", "none") != "none":
        name += SHARED_SUFFIX
    return name, int(gpu["count"])


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
    sharing: str | None = None,
    node_selector: dict[str, str] | None = None,
) -> Capacity:
    """How many more pods requesting ``per_pod`` of ``resource`` fit. ``reserved`` counts
    requests of our own pods per node that are about to go away and should count as free
    (none by default). ``sharing`` (runtime.gpu.sharing: none, timeSlicing or mps) and
    ``node_selector`` (runtime.nodeSelector) leave out nodes the pod cannot land on."""
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
        if product and labels.get(PRODUCT_LABEL) != product:
            continue
        if min_memory_mib and _quantity(labels.get(MEMORY_LABEL, 0)) < min_memory_mib:
            continue
        if sharing in SHARING_STRATEGIES and labels.get(SHARING_LABEL) != SHARING_STRATEGIES[sharing]:
            continue
        if any(labels.get(key) != value for key, value in (node_selector or {}).items()):
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
    if sharing in SHARING_STRATEGIES:
        where += f" sharing GPUs by {SHARING_STRATEGIES[sharing]}"
    detail = f"{eligible} eligible nodes{where}, {total} {resource} allocatable, {sum(used.values())} requested"
    return Capacity(resource=resource, per_pod=per_pod, free_pods=fits, detail=detail)


def preflight(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], runtime: dict[str, Any]) -> Capacity | None:
    """:func:`free_pods` for a ModelDeployment's ``runtime`` (wire form): the resource, product,
    memory, sharing and node selector all read from it, so a GPU field the pods honour is never
    one the preflight forgets. None when the pods request no GPU."""
    gpu = runtime.get("gpu")
    wanted = resource(gpu)
    if wanted is None or gpu is None:
        return None
    name, count = wanted
    return free_pods(
        nodes,
        pods,
        name,
        count,
        product=gpu.get("product"),
        min_memory_mib=gpu.get("minMemoryMiB"),
        sharing=gpu.get("sharing"),
        node_selector=runtime.get("nodeSelector"),
    )
