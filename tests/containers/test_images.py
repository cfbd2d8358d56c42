"""The images as users run them: built by hack/images from the Dockerfile on a Debian base, run
by podman with runc as the operator's pod template and the chart lock them down (user 10001,
read-only root file system, no capabilities), reached on 127.0.0.1 with the clients users have.

- the serving image runs the pod the operator builds, with a sample ONNX model mounted
  read-only: its probes, Triton's HTTP and gRPC clients, its Prometheus metrics, and a SIGTERM
  that lets requests in flight finish and exits 0 well before the kill;
- the operator image, as the chart renders it, reconciles a ModelDeployment on the local
  control plane;
- the gateway image, as the chart renders it, routes a ModelDeployment's traffic to the
  serving container."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

from cutover.api.contract import SERVING_GRPC_PORT, SERVING_PORT
from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator import builders
from cutover.operator.rollout import Source, Workload
from cutover.serving import sample_models
from tests.cluster.test_control_plane import helm
from tests.cluster.test_operator import deploy_v1, fast_canary
from tests.serving.support import CLASSIFIER_INPUTS
from tests.serving.test_server import _body, _post_many
from tests.support.kubectl import Kube
from tests.support.ports import free_port
from tests.support.waiting import wait_until

from .support import REPO, SESSION_LABEL, Container, Images, build, kubeconfig_for, remove_orphans, running, wait_ready

pytestmark = pytest.mark.containers
MODEL = "classifier"


@pytest.fixture(scope="module")
def images() -> Images:
    return build("operator", "serving", "gateway")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample classifier (good, and slow enough to keep requests in flight), readable by the
    containers' user."""
    folder = tmp_path_factory.mktemp("models")
    sample_models.onnx_classifier(folder / "good.onnx")
    sample_models.onnx_classifier(folder / "slow.onnx", "slow", slow_work=3000)
    folder.chmod(0o755)
    for model in folder.iterdir():
        model.chmod(0o644)
    return folder


def serving_pod(model: str, namespace: str = "tests") -> dict[str, Any]:
    """The pod spec the operator gives a revision of a ModelDeployment serving ``model`` from the
    PersistentVolumeClaim ``models``."""
    md = ModelDeployment.model_validate(
        {
            "apiVersion": "cutover.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": MODEL, "namespace": namespace, "uid": "c0ffee", "generation": 1},
            "spec": {
                "model": {
                    "name": MODEL,
                    "version": "1",
                    "format": "onnx",
                    "storageUri": f"pvc://models/{model}",
                    "inputs": json.loads(CLASSIFIER_INPUTS),
                },
                "strategy": {"type": "canary", "canary": {"steps": [{"setWeight": 20}]}},
            },
        }
    )
    wire = md.spec.wire()
    workload = Workload("r1", "stable", 1, Source(wire["model"], wire["runtime"]))
    pod: dict[str, Any] = builders.deployment(md, workload)["spec"]["template"]["spec"]
    return pod


@pytest.fixture
def serving(images: Images, models: Path) -> Iterator[Container]:
    pod = serving_pod("good.onnx")
    with running(images, pod, claims={"models": models}) as container:
        wait_ready(container, container.url(SERVING_PORT) + "/v2/health/ready")
        yield container


def chart(namespace: str, *values: str) -> list[dict[str, Any]]:
    """The chart's objects as `helm template` renders them into ``namespace`` with ``values``."""
    versions = dict(line.split("=", 1) for line in (REPO / "hack/versions.env").read_text().split() if "=" in line)
    command = [helm(), "template", "cutover", str(REPO / "charts" / "cutover"), "--namespace", namespace]
    command += ["--kube-version", versions["KUBE_VERSION"], *(f"--set={value}" for value in values)]
    rendered = subprocess.run(command, capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def chart_pod(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (deployment,) = (
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def triton_infer(url: str, x: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        result: np.ndarray = client.infer(MODEL, [tensor]).as_numpy("probabilities")
        return result
    finally:
        client.close()


def expected(models: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(models / "good.onnx"), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"input": x})[0]
    return result


def test_the_operator_deploys_the_serving_image_that_was_built(images: Images) -> None:
    assert serving_pod("good.onnx")["containers"][0]["image"] == images.name("serving")
    docs = chart("cutover")
    assert chart_pod(docs, "operator")["containers"][0]["image"] == images.name("operator")
    assert chart_pod(docs, "gateway")["containers"][0]["image"] == images.name("gateway")


def test_a_killed_sessions_containers_are_removed_and_a_running_ones_kept(images: Images) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = images.podman("create", f"--label={SESSION_LABEL}={gone.pid}", images.name("serving")).stdout.strip()
    alive = images.podman("create", f"--label={SESSION_LABEL}=1", images.name("serving")).stdout.strip()
    try:
        remove_orphans(images)
        assert images.podman("container", "exists", orphan, check=False).returncode == 1
        assert images.podman("container", "exists", alive, check=False).returncode == 0
    finally:
        images.podman("rm", "--force", "--ignore", orphan, alive, check=False)


def test_the_serving_container_answers_triton_clients_probes_and_prometheus(serving: Container, models: Path) -> None:
    url = serving.url(SERVING_PORT)
    x = sample_models.sample_inputs(5, seed=3).astype(np.float32)
    np.testing.assert_allclose(triton_infer(url, x), expected(models, x), rtol=1e-5)

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{serving.ports[SERVING_GRPC_PORT]}")
    try:
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        answer = client.infer(MODEL, [tensor]).as_numpy("probabilities")
        np.testing.assert_allclose(answer, expected(models, x), rtol=1e-5)
    finally:
        client.close()

    with urllib.request.urlopen(url + "/v2/health/live", timeout=5) as live:
        assert live.status == 200
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        metrics = response.read().decode()
    counted = [line for line in metrics.splitlines() if line.startswith("cutover_serving_requests_total{")]
    assert any('code="200"' in line and float(line.rpartition(" ")[2]) >= 1 for line in counted), counted


def test_a_model_file_the_pods_user_cannot_read_is_named_and_the_pod_stays_unready(
    images: Images, models: Path, tmp_path: Path
) -> None:
    """ONNX Runtime said only "system error number 13"; the pod keeps retrying, live and unready."""
    private = tmp_path / "private"
    private.mkdir(mode=0o755)
    shutil.copy(models / "good.onnx", private / "good.onnx")
    (private / "good.onnx").chmod(0o600)
    with running(images, serving_pod("good.onnx"), claims={"models": private}) as container:
        wait_until(lambda: "is not readable" in container.logs(), 30, "the reason in the log", 0.1)
        assert "owner 0:0" in container.logs() and "user 10001" in container.logs()
        url = container.url(SERVING_PORT)
        with urllib.request.urlopen(url + "/v2/health/live", timeout=5) as live:
            assert live.status == 200
        with pytest.raises(urllib.error.HTTPError) as ready:
            urllib.request.urlopen(url + "/v2/health/ready", timeout=5)
        assert ready.value.code == 503


def test_sigterm_lets_requests_in_flight_finish_and_exits_0(images: Images, models: Path) -> None:
    pod = serving_pod("slow.onnx")
    with running(images, pod, claims={"models": models}) as container:
        url = container.url(SERVING_PORT)
        wait_ready(container, url + "/v2/health/ready")
        bodies = [_body(sample_models.sample_inputs(1, seed=i)) for i in range(20)]
        results: list[tuple[int, bytes, dict[str, str]]] = []
        load = threading.Thread(target=lambda: results.extend(asyncio.run(_post_many(url, bodies, concurrency=20))))
        load.start()

        def in_flight() -> bool:
            with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
                lines = response.read().decode().splitlines()
            return any(line.startswith("cutover_serving_in_flight") and not line.endswith(" 0.0") for line in lines)

        wait_until(in_flight, 30, "requests in flight", 0.01)
        # The pod's grace period: an exit code of 137 would mean the kill came first.
        assert container.stop(grace=pod["terminationGracePeriodSeconds"]) == 0
        load.join(60)
    assert [status for status, _, _ in results] == [200] * len(bodies)


@pytest.mark.cluster
def test_the_operator_image_reconciles_on_the_control_plane(
    images: Images, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    pod = chart_pod(chart(namespace, f"operator.watchNamespaces={{{namespace}}}"), "operator")
    kubeconfig = kubeconfig_for(kube, tmp_path / "kube")
    metrics_port = free_port()
    extra = ["--volume", f"{kubeconfig.parent}:/etc/cutover/kube:ro", "--env=KUBECONFIG=/etc/cutover/kube/kubeconfig"]
    with running(images, pod, host_network=True, extra=extra, args=[f"--metrics-port={metrics_port}"]) as operator:
        stable = deploy_v1(kube, namespace, fast_canary())
        assert kube.json("get", "deployment", f"ranker-{stable}", "-n", namespace)["spec"]["replicas"] == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            assert response.status == 200
        assert operator.state()["Running"]


@pytest.mark.cluster
def test_the_gateway_image_routes_to_the_serving_container(
    images: Images, serving: Container, models: Path, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    kube.apply(
        {
            "apiVersion": "cutover.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": MODEL, "namespace": namespace},
            "spec": {
                "model": {"name": MODEL, "version": "1", "format": "onnx", "storageUri": "pvc://models/good.onnx"},
                "strategy": {"type": "canary", "canary": {"steps": [{"setWeight": 20}]}},
            },
        }
    )
    traffic = [{"revision": "r1", "role": "stable", "weight": 100, "service": f"{MODEL}-r1"}]
    kube.run(
        "patch", "md", MODEL, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"traffic": traffic}}),
    )  # fmt: skip
    config = tmp_path / "config"
    kubeconfig_for(kube, config)
    (config / "backends.json").write_text(json.dumps({f"{namespace}/{MODEL}-r1": serving.url(SERVING_PORT)}))
    (config / "backends.json").chmod(0o644)
    pod = chart_pod(chart(namespace, f"gateway.watchNamespaces={{{namespace}}}", "gateway.auth=false"), "gateway")
    port = free_port()
    args = [
        f"--port={port}",
        f"--grpc-port={free_port()}",
        "--kubeconfig=/etc/cutover/kube/kubeconfig",
        "--backends=/etc/cutover/kube/backends.json",
    ]
    extra = ["--volume", f"{config}:/etc/cutover/kube:ro"]
    with running(images, pod, host_network=True, extra=extra, args=args) as gateway:
        url = f"http://127.0.0.1:{port}"
        wait_ready(gateway, url + "/v2/health/ready")
        x = sample_models.sample_inputs(3, seed=7).astype(np.float32)
        (answer,) = wait_until(lambda: _routed(url, x), 30, "the gateway to route the model")
        np.testing.assert_allclose(answer, expected(models, x), rtol=1e-5)


def _routed(url: str, x: np.ndarray) -> tuple[np.ndarray] | None:
    """The answer through the gateway once its watch has seen the route (None before: 404)."""
    try:
        return (triton_infer(url, x),)
    except InferenceServerException as error:
        if "404" in str(error.status()) or "not found" in str(error).lower():
            return None
        raise
