"""The local control plane is the real thing: scheduler, controller-manager, garbage collector,
GPU resources and taints, a stamped version, and Helm against it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cutover.operator import cli
from cutover.serving.gateway.keys import tiers_from
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from ..conftest import REPO

pytestmark = pytest.mark.cluster
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pod(name: str, resources: dict[str, str], tolerate_gpu: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "serve", "image": "cutover/serving:test", "resources": {"limits": resources}}],
    }
    if tolerate_gpu:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def nodes(kube: Kube) -> dict[str, dict[str, Any]]:
    return {n["metadata"]["name"]: n for n in kube.json("get", "nodes")["items"]}


def test_server_reports_a_stamped_version(kube: Kube) -> None:
    version = json.loads(kube.run("get", "--raw", "/version").stdout)
    assert version["gitVersion"].startswith("v1.36.") and version["major"] == "1" and version["minor"] == "36"


def test_every_component_listens_on_loopback_only(kube: Kube) -> None:
    if kube.pid_dir is None:
        pytest.skip("the cluster was not started by this run")
    sockets = subprocess.run(["ss", "-ltnpH"], check=True, capture_output=True, text=True).stdout.splitlines()
    components = {pid.stem: pid.read_text().strip() for pid in kube.pid_dir.glob("*.pid")}
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller"} <= set(components)
    for name, pid in components.items():
        listening = [line.split()[3] for line in sockets if f"pid={pid}," in line]
        assert listening, f"{name} listens nowhere"
        assert all(address.startswith("127.0.0.1:") for address in listening), f"{name}: {listening}"


def test_simulated_nodes_advertise_gpus_and_mig(kube: Kube) -> None:
    all_nodes = nodes(kube)
    gpu = [n for n in all_nodes.values() if "nvidia.com/gpu" in n["status"]["allocatable"]]
    mig = [n for n in all_nodes.values() if "nvidia.com/mig-1g.10gb" in n["status"]["allocatable"]]
    cpu = [n for n in all_nodes.values() if n["metadata"]["labels"].get("cutover.dev/pool") == "cpu"]
    assert len(cpu) >= 3 and len(gpu) >= 2 and len(mig) >= 1
    for node in gpu + mig:
        labels = node["metadata"]["labels"]
        assert labels["nvidia.com/gpu.product"] and labels["nvidia.com/gpu.memory"]
        assert "nvidia.com/mig.capable" in labels
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert all(
        c["status"] == "True" for n in all_nodes.values() for c in n["status"]["conditions"] if c["type"] == "Ready"
    )


def test_gpu_pod_lands_on_a_gpu_node(kube: Kube, namespace: str) -> None:
    kube.apply(pod("gpu-pod", {"nvidia.com/gpu": "1"}), namespace=namespace)
    body = wait_until(
        lambda: (p := kube.json("get", "pod", "gpu-pod", "-n", namespace))["status"].get("phase") == "Running" and p,
        what="the GPU pod to run",
    )
    node = nodes(kube)[body["spec"]["nodeName"]]
    assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 1


def test_cpu_pod_without_toleration_avoids_gpu_nodes(kube: Kube, namespace: str) -> None:
    kube.apply(pod("cpu-pod", {"cpu": "1"}, tolerate_gpu=False), namespace=namespace)
    body = wait_until(
        lambda: (p := kube.json("get", "pod", "cpu-pod", "-n", namespace))["spec"].get("nodeName") and p,
        what="the CPU pod to be scheduled",
    )
    assert nodes(kube)[body["spec"]["nodeName"]]["metadata"]["labels"]["cutover.dev/pool"] == "cpu"


def test_mig_slice_pod_lands_on_the_mig_node(kube: Kube, namespace: str) -> None:
    kube.apply(pod("mig-pod", {"nvidia.com/mig-1g.10gb": "1"}), namespace=namespace)
    body = wait_until(
        lambda: (p := kube.json("get", "pod", "mig-pod", "-n", namespace))["spec"].get("nodeName") and p,
        what="the MIG pod to be scheduled",
    )
    assert "nvidia.com/mig-1g.10gb" in nodes(kube)[body["spec"]["nodeName"]]["status"]["allocatable"]


def test_exhausted_gpus_leave_the_pod_pending_with_failed_scheduling(kube: Kube, namespace: str) -> None:
    total = sum(int(n["status"]["allocatable"].get("nvidia.com/gpu", 0)) for n in nodes(kube).values())
    kube.apply(pod("too-many-gpus", {"nvidia.com/gpu": str(total + 1)}), namespace=namespace)

    def failed_scheduling() -> Any:
        events = kube.json("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=too-many-gpus")
        return [e for e in events["items"] if e["reason"] == "FailedScheduling"]

    events = wait_until(failed_scheduling, what="a FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in events[0]["message"]
    assert kube.json("get", "pod", "too-many-gpus", "-n", namespace)["status"]["phase"] == "Pending"


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "serve", "image": "cutover/serving:test"}]},
            },
        },
    }


def test_deployment_gets_a_replicaset_and_running_pods(kube: Kube, namespace: str) -> None:
    kube.apply(deployment("web", 3), namespace=namespace)
    wait_until(
        lambda: kube.json("get", "replicasets", "-n", namespace, "-l", "app=web")["items"],
        what="a ReplicaSet",
    )
    running = wait_until(
        lambda: (
            len(
                [
                    p
                    for p in kube.json("get", "pods", "-n", namespace, "-l", "app=web")["items"]
                    if p["status"].get("phase") == "Running"
                ]
            )
            == 3
        ),
        what="3 running pods",
    )
    assert running
    status = wait_until(
        lambda: (
            (d := kube.json("get", "deployment", "web", "-n", namespace))["status"].get("readyReplicas") == 3
            and d["status"]
        ),
        what="the Deployment to be ready",
    )
    assert status["availableReplicas"] == 3


def test_deleting_an_owner_garbage_collects_its_children(kube: Kube, namespace: str) -> None:
    kube.apply(deployment("owned", 2), namespace=namespace)
    wait_until(lambda: len(kube.json("get", "pods", "-n", namespace, "-l", "app=owned")["items"]) == 2, what="2 pods")
    kube.run("delete", "deployment", "owned", "-n", namespace, "--cascade=background", "--wait=false")
    wait_until(
        lambda: not kube.json("get", "replicasets", "-n", namespace, "-l", "app=owned")["items"],
        what="the ReplicaSet to be collected",
    )
    wait_until(
        lambda: not kube.json("get", "pods", "-n", namespace, "-l", "app=owned")["items"],
        what="the pods to be collected",
    )


def helm() -> str:
    path = REPO / ".tools" / "bin" / "helm"
    return str(path) if path.exists() else shutil.which("helm") or "helm"


def test_helm_lint_and_template(kube: Kube, tmp_path: Path) -> None:
    chart = str(REPO / "charts" / "cutover")
    subprocess.run([helm(), "lint", "--strict", chart], check=True, capture_output=True, text=True)
    rendered = subprocess.run(
        [
            helm(),
            "template",
            "cutover",
            chart,
            "--namespace",
            "cutover-system",
            "--kubeconfig",
            kube.kubeconfig,
            "--validate",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "kind: ClusterRole" in rendered and "cutover-operator" in rendered


def test_helm_gateway_is_read_only_and_scoped_to_its_namespaces(kube: Kube, namespace: str) -> None:
    """The chart's gateway: arguments `cutover gateway` accepts, a tiers file it can read, and RBAC
    that reads ModelDeployments and key Secrets of the watched namespaces and nothing more."""
    rendered = subprocess.run(
        [
            helm(),
            "template",
            "cutover",
            str(REPO / "charts" / "cutover"),
            "--namespace",
            namespace,
            "--kubeconfig",
            kube.kubeconfig,
            "--validate",
            "--show-only",
            "templates/gateway.yaml",
            "--set",
            f"gateway.watchNamespaces={{{namespace}}}",
            "--set-json",
            'gateway.tiers={"pro": {"rate": 100, "burst": 200}}',
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(rendered) if doc}
    assert "ClusterRole" not in docs and docs["Role"]["metadata"]["namespace"] == namespace
    kube.apply(*docs.values(), namespace=namespace)

    pod = docs["Deployment"]["spec"]["template"]["spec"]
    args = cli.parser().parse_args(pod["containers"][0]["args"])
    assert args.namespace == [namespace] and args.retries == 1
    grpc = {port["name"]: port for port in pod["containers"][0]["ports"]}["grpc"]
    service = {port["name"]: port for port in docs["Service"]["spec"]["ports"]}["grpc"]
    assert args.grpc_port == grpc["containerPort"] and service["targetPort"] == "grpc"
    mount = pod["containers"][0]["volumeMounts"][0]["mountPath"]
    assert (
        str(args.tiers).startswith(mount)
        and pod["volumes"][0]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    )
    tiers = tiers_from(yaml.safe_load(docs["ConfigMap"]["data"][args.tiers.name]))
    assert tiers["pro"].rate == 100 and tiers["pro"].burst == 200

    account = f"system:serviceaccount:{namespace}:{docs['ServiceAccount']['metadata']['name']}"

    def can(*what: str, where: str = namespace) -> bool:
        done = kube.run("auth", "can-i", *what, "--namespace", where, "--as", account, check=False)
        return done.stdout.strip() == "yes"

    assert can("watch", "modeldeployments.cutover.dev") and can("list", "secrets") and can("watch", "secrets")
    assert not can("patch", "modeldeployments.cutover.dev") and not can("update", "modeldeployments.cutover.dev/status")
    assert not can("create", "secrets") and not can("list", "pods") and not can("patch", "deployments.apps")
    assert not can("list", "secrets", where="default"), "keys of namespaces it does not serve"
