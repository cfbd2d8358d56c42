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

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cutover.api.contract import LABEL_MODEL, LABEL_REVISION

from . import metrics
from .kube import Kube
from .rollout import Capacity

TERMINAL = ("Succeeded", "Failed")
SHARING_LABEL = "nvidia.com/gpu.sharing-strategy"
"""Node label GPU feature discovery sets: none, time-slicing or mps."""
SHARING_STRATEGIES = {"timeSlicing": "time-slicing", "mps": "mps"}
"""runtime.gpu.sharing -> the value of SHARING_LABEL on nodes that share GPUs that way."""
SHARED_SUFFIX = ".shared"
"""Suffix of a shared replica's resource name (device plugin ``renameByDefault: true``)."""
GPU_PREFIX = "nvidia.com/"
"""What every resource the preflight counts starts with: whole GPUs, MIG slices, shared replicas."""
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


def requested(pods: Iterable[dict[str, Any]], resource: str) -> dict[str, int]:
    """Per node name: how much of the GPU ``resource`` the bound, unfinished ``pods`` request
    (each pod read by :func:`trim_pod`, as :class:`GpuView` reads it)."""
    used: dict[str, int] = defaultdict(int)
    for held in filter(None, map(trim_pod, pods)):
        used[held.node] += held.requests.get(resource, 0)
    return used


def free_pods(
    nodes: Iterable[dict[str, Any]],
    used: Mapping[str, int],
    resource: str,
    per_pod: int,
    product: str | None = None,
    min_memory_mib: int | None = None,
    sharing: str | None = None,
    node_selector: dict[str, str] | None = None,
) -> Capacity:
    """How many more pods requesting ``per_pod`` of ``resource`` fit on ``nodes``, given what is
    ``used`` of it per node name (:func:`requested`, or :class:`GpuView`'s totals). ``sharing``
    (runtime.gpu.sharing: none, timeSlicing or mps) and ``node_selector`` (runtime.nodeSelector)
    leave out nodes the pod cannot land on."""
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
        free = allocatable - used.get(name, 0)
        total += allocatable
        fits += max(0, free) // per_pod
    where = f" on nodes with {product}" if product else ""
    if sharing in SHARING_STRATEGIES:
        where += f" sharing GPUs by {SHARING_STRATEGIES[sharing]}"
    detail = f"{eligible} eligible nodes{where}, {total} {resource} allocatable, {sum(used.values())} requested"
    return Capacity(resource=resource, per_pod=per_pod, free_pods=fits, detail=detail)


def preflight(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], runtime: dict[str, Any]) -> Capacity | None:
    """:func:`free_pods` for a ModelDeployment's ``runtime`` (wire form) among ``pods``: the
    resource, product, memory, sharing and node selector all read from it, so a GPU field the
    pods honour is never one the preflight forgets. None when the pods request no GPU."""
    return _preflight(nodes, lambda name: requested(pods, name), runtime)


def _preflight(
    nodes: Iterable[dict[str, Any]], used: Callable[[str], Mapping[str, int]], runtime: dict[str, Any]
) -> Capacity | None:
    gpu = runtime.get("gpu")
    wanted = resource(gpu)
    if wanted is None or gpu is None:
        return None
    name, count = wanted
    return free_pods(
        nodes,
        used(name),
        name,
        count,
        product=gpu.get("product"),
        min_memory_mib=gpu.get("minMemoryMiB"),
        sharing=gpu.get("sharing"),
        node_selector=runtime.get("nodeSelector"),
    )


# ----------------------------------------------------------------------------- the shared view

SYNC_TIMEOUT = 30.0
"""Seconds a preflight waits for the first list of nodes and pods before its pass fails."""
BOUND_AND_LIVE = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
"""Field selector of the pods that hold GPUs: bound to a node and not finished. A pod that stops
matching (it ends) arrives as DELETED, one that starts to (it is bound) as ADDED."""


class GpuViewUnavailable(RuntimeError):
    """The nodes and pods could not be listed within :data:`SYNC_TIMEOUT` (RBAC, API server down)."""


def _gpu_only(resources: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (resources or {}).items() if k.startswith(GPU_PREFIX)}


def trim_node(node: dict[str, Any]) -> dict[str, Any] | None:
    """What :func:`free_pods` reads of a node (name, labels, unschedulable, GPU allocatable), or
    None for a node that offers no GPU resource (it can never fit a GPU pod)."""
    allocatable = _gpu_only(node.get("status", {}).get("allocatable"))
    if not allocatable:
        return None
    meta = node.get("metadata", {})
    return {
        "metadata": {"name": meta.get("name", ""), "labels": dict(meta.get("labels") or {})},
        "spec": {"unschedulable": bool(node.get("spec", {}).get("unschedulable"))},
        "status": {"allocatable": allocatable},
    }


Owner = tuple[str, str, str]
"""A pod's (namespace, ModelDeployment, revision), from its cutover.dev labels."""


@dataclass(frozen=True)
class HeldGpus:
    """What the view keeps of a pod that holds GPUs: its node, owner and GPU requests."""

    node: str
    owner: Owner
    requests: dict[str, int]


def trim_pod(pod: dict[str, Any]) -> HeldGpus | None:
    """The GPUs a pod holds (summed over its containers, by resource), or None for a pod that
    holds none: unbound, finished, or requesting no GPU resource."""
    spec = pod.get("spec", {})
    if not spec.get("nodeName") or pod.get("status", {}).get("phase") in TERMINAL:
        return None
    requests: dict[str, int] = defaultdict(int)
    for container in spec.get("containers", []):
        for name, quantity in _gpu_only(container.get("resources", {}).get("requests")).items():
            requests[name] += _quantity(quantity)
    if not any(requests.values()):
        return None
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    owner = (meta.get("namespace", ""), labels.get(LABEL_MODEL, ""), labels.get(LABEL_REVISION, ""))
    return HeldGpus(spec["nodeName"], owner, dict(requests))


class GpuView:
    """One shared view of the cluster's GPU nodes and the GPU requests of its bound pods, for the
    preflight of every ModelDeployment: kept by a list-then-watch of nodes and one of pods
    (cluster-wide: another namespace's pods use the same GPUs), started by the first preflight
    that needs it, so an operator without GPU ModelDeployments watches nothing.

    A preflight used to list every node and pod of the cluster on each pass of each GPU
    ModelDeployment (2 lists a pass, each the size of the cluster); now a pass reads memory,
    and costs the GPU nodes: the requests per node are totalled as pod events arrive. Only GPU
    nodes and pods that hold GPUs are kept, trimmed to what the preflight reads
    (:func:`trim_node`, :func:`trim_pod`), so the view's size follows the GPU pods, not the
    cluster. Each event is applied as it arrives: a pod bound a moment ago is counted by the
    next preflight that runs after its event (the watch's delay, not a cache's lifetime)."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        """By node name."""
        self.pods: dict[tuple[str, str], HeldGpus] = {}
        """By (namespace, name)."""
        self.used: dict[str, dict[str, int]] = {}
        """By GPU resource, then node name: what the kept pods request, kept up to date with each
        pod event so that a preflight costs the GPU nodes, not the GPU pods."""
        self.owned: dict[Owner, set[tuple[str, str]]] = {}
        """By owner (namespace, ModelDeployment, revision): its pods, for :meth:`preflight`'s
        ``leave_out``."""
        self._synced = {"Node": asyncio.Event(), "Pod": asyncio.Event()}
        self._tasks: list[asyncio.Task[None]] = []

    def observe(self, kind: str, event: str, obj: Any) -> None:
        """Apply one event of a :class:`~cutover.serving.kube.Watcher` of ``kind`` (Node or
        Pod): ("SYNC", items) replaces what is kept, ADDED/MODIFIED/DELETED change one object."""
        if event == "SYNC":
            if kind == "Node":
                self.nodes.clear()
            else:
                self.pods.clear()
                self.used.clear()
                self.owned.clear()
            for item in obj:
                self.observe(kind, "ADDED", item)
            self._synced[kind].set()
            return
        meta = obj.get("metadata", {})
        if kind == "Node":
            node = trim_node(obj) if event != "DELETED" else None
            if node is None:
                self.nodes.pop(meta.get("name", ""), None)
            else:
                self.nodes[meta.get("name", "")] = node
            return
        key = (meta.get("namespace", ""), meta.get("name", ""))
        self._count(key, self.pods.pop(key, None), -1)
        held = trim_pod(obj) if event != "DELETED" else None
        if held is not None:
            self.pods[key] = held
            self._count(key, held, +1)

    def _count(self, key: tuple[str, str], held: HeldGpus | None, sign: int) -> None:
        """Add (``sign`` +1) or take away (-1) one pod's requests and ownership."""
        if held is None:
            return
        for name, quantity in held.requests.items():
            per_node = self.used.setdefault(name, {})
            per_node[held.node] = per_node.get(held.node, 0) + sign * quantity
            if not per_node[held.node]:
                del per_node[held.node]
        pods = self.owned.setdefault(held.owner, set())
        if sign > 0:
            pods.add(key)
        else:
            pods.discard(key)
        if not pods:
            del self.owned[held.owner]

    def start(self, kube: Kube) -> None:
        """Start the two watches on ``kube`` (once; later calls do nothing)."""
        if self._tasks:
            return
        for kind, collection, params in (
            ("Node", "/api/v1/nodes", {}),
            ("Pod", "/api/v1/pods", {"fieldSelector": BOUND_AND_LIVE}),
        ):
            self._tasks.append(
                asyncio.create_task(self._follow(kube, kind, collection, params), name=f"gpu view {kind}")
            )

    async def _follow(self, kube: Kube, kind: str, collection: str, params: dict[str, str]) -> None:
        resource = collection.rpartition("/")[2]

        def restarted(reason: str) -> None:
            metrics.WATCH_RESTARTS.labels(resource, reason).inc()

        async for event, obj in kube.watch(collection, restarted, **params).events():
            self.observe(kind, event, obj)

    async def preflight(self, kube: Kube, runtime: dict[str, Any], leave_out: Owner | None = None) -> Capacity | None:
        """:func:`preflight` over the view (started on ``kube`` if it is not yet), without the
        pods of ``leave_out`` (a rollout's own candidate: namespace, ModelDeployment, revision).
        None when the pods request no GPU. Raises :class:`GpuViewUnavailable` when the first
        lists take over :data:`SYNC_TIMEOUT` seconds."""
        if resource(runtime.get("gpu")) is None:
            return None
        self.start(kube)
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                for synced in self._synced.values():
                    await synced.wait()
        except TimeoutError:
            raise GpuViewUnavailable(
                f"nodes and pods not listed within {SYNC_TIMEOUT:.0f} s (see the watch's log)"
            ) from None
        return _preflight(self.nodes.values(), lambda name: self._used(name, leave_out), runtime)

    def _used(self, name: str, leave_out: Owner | None) -> Mapping[str, int]:
        used = self.used.get(name, {})
        mine = self.owned.get(leave_out, set()) if leave_out is not None else set()
        if not mine:
            return used
        less = dict(used)
        for key in mine:
            held = self.pods[key]
            less[held.node] = less.get(held.node, 0) - held.requests.get(name, 0)
        return less

    async def close(self) -> None:
        """Stop the watches (operator cleanup)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
