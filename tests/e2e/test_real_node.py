"""The canary scenario with serving pods that really run: a real node (hack/node: the kubelet
built from the control plane's Kubernetes version, containerd with Debian's runc, Debian's CNI
bridge) beside kwok's simulated ones, the project's serving image (hack/images) loaded into it.
The real scheduler places the pods there by the node's label and taint, the real kubelet starts
them and probes them, the endpoint-slice controller follows their readiness, and from the
EndpointSlices (hack/endpoints.py) Prometheus scrapes their pod IPs and the gateway calls them.

Slow (a node to start, an image to load, containers that import onnxruntime): `make e2e-real`
runs it; plain `pytest` leaves it out (the ``realnode`` marker). Needs root."""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cutover.api.contract import LABEL_MODEL, LABEL_REVISION, SERVING_PORT
from cutover.serving import sample_models, storage
from hack.devstack import Stack
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from ..conftest import REPO
from .receivers import Loopback
from .test_full_stack import (
    CANARY,
    deployment,
    nothing_lost,
    promoted_over,
    ready,
    rolled_back,
    start_traffic,
    status,
    until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]
LABEL = "cutover.dev/real-node"
"""The label and the taint hack/node gives the real node."""
IMAGE = f"ghcr.io/cutover/serving:{version('cutover')}"
"""What hack/images tags the serving target (the package's version)."""


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    """Its InternalIP: the pod bridge's own address, which its pods reach the host on."""
    subnet: ipaddress.IPv4Network


def hack(*args: str | Path) -> str:
    """Run a hack/ script; its last line of output."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


@pytest.fixture(scope="module")
def node(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    cluster = Path(kube.kubeconfig).parent
    if not (cluster / "pki" / "ca.key").exists():
        pytest.fail(f"a real node joins a cluster that hack/cluster started; {kube.kubeconfig} is not one")
    images = tmp_path_factory.mktemp("images")
    hack(REPO / "hack/images", "serving")
    archive = hack(REPO / "hack/images", "save", images, "serving")
    name = hack(REPO / "hack/node", "up", cluster.name)
    try:
        hack(REPO / "hack/node", "load", cluster.name, archive)
        body = kube.json("get", "node", name)
        address = next(a["address"] for a in body["status"]["addresses"] if a["type"] == "InternalIP")
        yield Node(name, address, ipaddress.IPv4Network(f"{address}/24", strict=False))
    finally:
        hack(REPO / "hack/node", "down", cluster.name)


class ModelFiles(Loopback):
    """The models over HTTP on the node's address, where its pods fetch them (with a checksum)."""

    def __init__(self, host: str, folder: Path) -> None:
        super().__init__(host)
        self.folder = folder

    def routes(self, app: web.Application) -> None:
        app.router.add_static("/", self.folder)


@pytest.fixture(scope="module")
def files(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelFiles]:
    folder = tmp_path_factory.mktemp("models")
    sample_models.onnx_classifier(folder / "v1.onnx", "faulty", seed=0, fail_above=2.054)  # ~2% fail
    sample_models.onnx_classifier(folder / "v2.onnx", "faulty", seed=0, fail_above=2.054)
    sample_models.onnx_classifier(folder / "bad.onnx", "faulty", seed=2, fail_above=1.2816)  # ~10%
    server = ModelFiles(node.address, folder).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(kube: Kube, node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    running = Stack(workdir, namespace=f"real-{uuid.uuid4().hex[:6]}", kubeconfig=kube.kubeconfig, real_node=True)
    try:
        yield running.start()
    finally:
        running.close()


def on_node(stack: Stack, files: ModelFiles, version: str, model: str) -> dict[str, Any]:
    """The full-stack tests' canary ModelDeployment, its pods on the real node, its model fetched
    over HTTP from the host."""
    path = files.folder / f"{model}.onnx"
    md = deployment(stack, "real", version, path, CANARY)
    md["spec"]["model"] |= {"storageUri": files.url(f"/{path.name}"), "checksum": storage.sha256(path)}
    md["spec"]["runtime"] = {
        "replicas": 1,
        "image": IMAGE,
        "nodeSelector": {LABEL: "true"},
        "tolerations": [{"key": LABEL, "operator": "Exists", "effect": "NoSchedule"}],
    }
    return md


def running_pods(stack: Stack, revision: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = stack.kube.json("get", "pods", "-n", stack.namespace, "-l", f"{LABEL_MODEL}=real")[
        "items"
    ]
    return [
        p
        for p in pods
        if p["metadata"]["labels"].get(LABEL_REVISION) == revision
        and p["status"].get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]


def assert_real(pod: dict[str, Any], node: Node) -> None:
    """The pod was scheduled on the real node, runs in containerd and is ready by the kubelet's
    probe, with an address on the node's pod network."""
    assert pod["spec"]["nodeName"] == node.name, pod["spec"].get("nodeName")
    assert ipaddress.ip_address(pod["status"]["podIP"]) in node.subnet, pod["status"].get("podIP")
    (container,) = pod["status"]["containerStatuses"]
    assert container["ready"] and container["containerID"].startswith("containerd://"), container


def scraped(stack: Stack) -> set[str]:
    """The instances Prometheus scrapes serving metrics from, and finds up."""
    return {s["metric"]["instance"] for s in stack.prometheus.query('up{job="cutover-serving"} == 1')}


def test_canary_on_a_real_node_promotes_a_good_version_and_rolls_back_a_bad_one(
    stack: Stack, node: Node, files: ModelFiles
) -> None:
    stack.apply(on_node(stack, files, "v1", "v1"))
    v1 = status(until(stack, "real", ready, 240, "v1 Ready"))["stableRevision"]
    (pod,) = wait_until(lambda: running_pods(stack, v1), 60, "v1's pod Running")
    assert_real(pod, node)
    traffic = start_traffic(stack, "real")
    stack.apply(on_node(stack, files, "v2", "v2"))
    weights_seen: set[int] = set()

    def promoted(md: dict[str, Any]) -> bool:
        weights_seen.add(status(md).get("canaryWeight") or 0)
        return promoted_over(v1)(md)

    v2 = status(until(stack, "real", promoted, 420, "v2 promoted"))["stableRevision"]
    assert {25, 50} <= weights_seen, weights_seen
    (pod,) = wait_until(lambda: running_pods(stack, v2), 60, "v2's pod Running")
    assert_real(pod, node)
    # The analysis read what Prometheus scraped from the pods' own addresses.
    target = f"{pod['status']['podIP']}:{SERVING_PORT}"
    wait_until(lambda: target in scraped(stack), 30, f"Prometheus to scrape {target}")
    stack.apply(on_node(stack, files, "v3", "bad"))
    md = until(stack, "real", rolled_back, 420, "the bad version rolled back")
    assert status(md)["stableRevision"] == v2
    assert "error-rate" in status(md)["message"], status(md)["message"]
    nothing_lost(traffic)
