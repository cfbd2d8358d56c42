"""The GPU preflight's shared view (gpu.GpuView): one watch of nodes and one of pods for every
GPU ModelDeployment, instead of a cluster-wide list of each on every pass of each of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from cutover.operator import gpu
from cutover.operator.kube import Kube

RUNTIME = {"gpu": {"count": 1, "product": "A100"}}


def node(name: str, gpus: int, product: str = "A100", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {gpu.PRODUCT_LABEL: product}},
        "spec": spec,
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "16", "pods": "110"}},
    }


def pod(
    name: str, node_name: str | None, gpus: int, phase: str = "Running", model: str = "other", revision: str = "r1"
) -> dict[str, Any]:
    requests = {"cpu": "1", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    labels = {"cutover.dev/model": model, "cutover.dev/revision": revision}
    return {
        "metadata": {"namespace": "shop", "name": name, "labels": labels},
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "resources": {"requests": requests}}]},
        "status": {"phase": phase},
    }


class Watches:
    """The API server's side of the view's two watches: each collection's list, then the events
    a test pushes. Counts the watches opened; any other request fails the test."""

    def __init__(self, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.lists = {"/api/v1/nodes": nodes, "/api/v1/pods": pods}
        self.events: dict[str, asyncio.Queue[tuple[str, Any]]] = {path: asyncio.Queue() for path in self.lists}
        self.opened: list[tuple[str, dict[str, str]]] = []

    def watch(self, collection: str, restarted: object = None, **params: str) -> Watches.Watcher:
        self.opened.append((collection, params))
        return Watches.Watcher(self, collection)

    class Watcher:
        def __init__(self, server: Watches, collection: str) -> None:
            self.server, self.collection = server, collection

        async def events(self) -> AsyncIterator[tuple[str, Any]]:
            yield "SYNC", self.server.lists[self.collection]
            while True:
                yield await self.server.events[self.collection].get()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def free(view: gpu.GpuView, server: Watches, leave_out: gpu.Owner | None = None) -> int:
    capacity = await view.preflight(cast(Kube, server), RUNTIME, leave_out)
    assert capacity is not None
    return capacity.free_pods


async def test_every_preflight_reads_one_pair_of_watches_and_lists_nothing() -> None:
    """Each GPU ModelDeployment's pass listed every node and every pod of the cluster: 2,000
    ModelDeployments, a third on GPUs, made 1,300 cluster-wide lists a minute at rest."""
    server = Watches([node("a", 4), node("b", 4)], [pod("p1", "a", 3)])
    view = gpu.GpuView()
    answers = await asyncio.gather(*(free(view, server) for _ in range(50)))
    assert answers == [5] * 50
    assert server.opened == [("/api/v1/nodes", {}), ("/api/v1/pods", {"fieldSelector": gpu.BOUND_AND_LIVE})]
    await view.close()


async def test_a_pod_bound_since_the_last_preflight_is_counted_by_the_next() -> None:
    server = Watches([node("a", 4), node("b", 4)], [])
    view = gpu.GpuView()
    assert await free(view, server) == 8
    server.events["/api/v1/pods"].put_nowait(("ADDED", pod("p1", "a", 2)))
    await settle()
    assert await free(view, server) == 6
    server.events["/api/v1/pods"].put_nowait(("MODIFIED", pod("p1", "a", 2)))  # its status, say
    await settle()
    assert await free(view, server) == 6, "counted once however often it changes"
    server.events["/api/v1/pods"].put_nowait(("MODIFIED", pod("p1", "a", 2, phase="Succeeded")))
    server.events["/api/v1/pods"].put_nowait(("ADDED", pod("p2", "b", 1)))
    await settle()
    assert await free(view, server) == 7, "a finished pod frees its GPUs"
    server.events["/api/v1/pods"].put_nowait(("DELETED", pod("p2", "b", 1)))
    server.events["/api/v1/nodes"].put_nowait(("MODIFIED", node("b", 4, unschedulable=True)))
    await settle()
    assert await free(view, server) == 4, "a cordoned node fits nothing"
    server.events["/api/v1/nodes"].put_nowait(("DELETED", node("a", 4)))
    await settle()
    assert await free(view, server) == 0
    await view.close()


async def test_a_rollouts_own_candidate_pods_are_left_out() -> None:
    pods = [pod("c1", "a", 2, model="ranker", revision="new"), pod("s1", "a", 1, model="ranker"), pod("o1", "a", 1)]
    server = Watches([node("a", 4)], pods)
    view = gpu.GpuView()
    assert await free(view, server) == 0
    assert await free(view, server, leave_out=("shop", "ranker", "new")) == 2
    assert await free(view, server, leave_out=("other", "ranker", "new")) == 0, "another namespace's ranker"
    server.events["/api/v1/pods"].put_nowait(("DELETED", pods[0]))
    await settle()
    assert await free(view, server, leave_out=("shop", "ranker", "new")) == 2
    assert view.owned == {("shop", "ranker", "r1"): {("shop", "s1")}, ("shop", "other", "r1"): {("shop", "o1")}}
    await view.close()


def test_the_view_keeps_only_what_holds_or_offers_gpus() -> None:
    """A cluster of CPU pods costs the view nothing: it keeps bound GPU pods and GPU nodes,
    trimmed to what the preflight reads."""
    view = gpu.GpuView()
    cpu_node = node("cpu", 0)
    cpu_node["status"]["allocatable"] = {"cpu": "16"}
    view.observe("Node", "SYNC", [node("a", 4), cpu_node])
    view.observe("Pod", "SYNC", [pod("gpu", "a", 1), pod("cpu", "a", 0), pod("pending", None, 1)])
    assert list(view.nodes) == ["a"] and list(view.pods) == [("shop", "gpu")]
    assert view.nodes["a"]["status"]["allocatable"] == {"nvidia.com/gpu": "4"}
    assert view.pods[("shop", "gpu")] == gpu.HeldGpus("a", ("shop", "other", "r1"), {"nvidia.com/gpu": 1})
    assert view.used == {"nvidia.com/gpu": {"a": 1}}
    view.observe("Pod", "SYNC", [])
    assert not view.pods and not view.used and not view.owned, "a relist replaces what was kept"


async def test_a_modeldeployment_without_gpus_starts_no_watch() -> None:
    server = Watches([], [])
    view = gpu.GpuView()
    assert await view.preflight(cast(Kube, server), {"replicas": 2}) is None
    assert server.opened == []
