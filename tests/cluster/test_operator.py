"""The operator on the real control plane: examples produce the right children, verdicts and
annotations drive rollouts, GPU capacity is reported, and a killed operator resumes exactly."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cutover.api.contract import LABEL_MODEL
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from ..cases import EXAMPLES, load
from .operator_support import Operator

pytestmark = pytest.mark.cluster


def md(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kube.json("get", "md", name, "-n", namespace)
    return body


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def weights(body: dict[str, Any]) -> dict[str, int]:
    return {row["role"]: row["weight"] for row in body.get("status", {}).get("traffic", []) if row["weight"]}


def fast_canary(name: str = "ranker", **spec: Any) -> dict[str, Any]:
    """The canary example with a local model file, two replicas and quick steps."""
    doc = copy.deepcopy(load("modeldeployment-canary.yaml"))
    doc["metadata"] = {"name": name}
    doc["spec"]["model"]["storageUri"] = "file:///models/ranker.onnx"
    doc["spec"]["runtime"]["replicas"] = 2
    doc["spec"]["analysis"].update({"interval": "1s", "minDuration": "1s"})
    doc["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 20},
        {"analysis": {}},
        {"setWeight": 50},
        {"pause": {"duration": "2s"}},
        {"analysis": {}},
    ]
    doc["spec"].update(spec)
    return doc


def healthy_pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    """The pods of a ModelDeployment once it is Healthy (waited for up to 90 s)."""
    wait_until(
        lambda: md(kube, namespace, name).get("status", {}).get("phase") == "Healthy",
        timeout=90,
        what=f"{name} to be Healthy",
    )
    pods: list[dict[str, Any]] = kube.json("get", "pods", "-n", namespace, "-l", f"{LABEL_MODEL}={name}")["items"]
    return pods


def deploy_v1(kube: Kube, namespace: str, doc: dict[str, Any]) -> str:
    kube.apply(doc, namespace=namespace)
    body = wait_until(
        lambda: (b := md(kube, namespace, doc["metadata"]["name"])).get("status", {}).get("phase") == "Healthy" and b,
        what="v1 to be Healthy",
    )
    stable: str = body["status"]["stableRevision"]
    return stable


def new_version(kube: Kube, namespace: str, doc: dict[str, Any], version: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["model"]["version"] = version
    kube.apply(doc, namespace=namespace)
    return doc


def bind_volume(kube: Kube, namespace: str, claim: str) -> None:
    """A statically bound PersistentVolumeClaim, so pods mounting it can be scheduled."""
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{claim}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "hostPath": {"path": f"/srv/{claim}"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": f"{namespace}-{claim}",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    kube.apply(pv, pvc)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("modeldeployment-*.yaml")))
def test_example_gets_its_deployment_and_service(kube: Kube, namespace: str, operator: Operator, example: str) -> None:
    doc = load(example)
    doc["metadata"].pop("namespace")
    name = doc["metadata"]["name"]
    kube.apply(doc, namespace=namespace)
    body = wait_until(
        lambda: (b := md(kube, namespace, name)).get("status", {}).get("stableRevision") and b, what="a stable revision"
    )
    child = f"{name}-{body['status']['stableRevision']}"
    deployment = wait_until(
        lambda: (
            kube.run("get", "deployment", child, "-n", namespace, "-o", "json", check=False).returncode == 0
            and kube.json("get", "deployment", child, "-n", namespace)
        ),
        what=f"deployment {child}",
    )
    kube.json("get", "service", child, "-n", namespace)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert (
        deployment["spec"]["template"]["metadata"]["labels"]["cutover.dev/revision"] == body["status"]["stableRevision"]
    )
    assert (
        container["securityContext"]["runAsNonRoot"]
        and container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    )
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    if doc["spec"].get("runtime", {}).get("gpu"):
        assert container["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"


def test_gpu_pods_land_on_the_mig_node(kube: Kube, namespace: str, operator: Operator) -> None:
    doc = load("modeldeployment-gpu-mig.yaml")
    doc["metadata"].pop("namespace")
    bind_volume(kube, namespace, "vision-models")
    kube.apply(doc, namespace=namespace)
    pods = healthy_pods(kube, namespace, "defect-detector")
    nodes = {n["metadata"]["name"]: n for n in kube.json("get", "nodes")["items"]}
    assert len(pods) == 2
    for pod in pods:
        assert "nvidia.com/mig-1g.10gb" in nodes[pod["spec"]["nodeName"]]["status"]["allocatable"]
    assert condition(md(kube, namespace, "defect-detector"), "GPUCapacity")["status"] == "True"


def test_more_gpus_than_exist_is_reported_not_silent(kube: Kube, namespace: str, operator: Operator) -> None:
    doc = fast_canary("big-model")
    doc["spec"]["runtime"]["gpu"] = {"count": 8}
    kube.apply(doc, namespace=namespace)
    gpu = wait_until(
        lambda: condition(md(kube, namespace, "big-model"), "GPUCapacity"), what="the GPUCapacity condition"
    )
    assert gpu["status"] == "False" and gpu["reason"] == "InsufficientGPUCapacity"
    assert "0 more pods of 8x nvidia.com/gpu fit" in gpu["message"]


def test_verdicts_drive_a_canary_to_promotion(kube: Kube, namespace: str, operator: Operator) -> None:
    doc = fast_canary()
    stable = deploy_v1(kube, namespace, doc)
    operator.verdict("ranker", "continue")
    new_version(kube, namespace, doc, "v2")
    wait_until(
        lambda: weights(md(kube, namespace, "ranker")) == {"stable": 80, "candidate": 20}, what="20% on the candidate"
    )
    operator.wait_passes(2)  # the operator looked again and held the step
    body = md(kube, namespace, "ranker")
    assert body["status"]["currentStepIndex"] == 1 and body["status"]["phase"] == "Progressing"  # held by analysis
    operator.verdict("ranker", "promote")
    subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            kube.kubeconfig,
            "wait",
            "--for=condition=Promoted",
            "md/ranker",
            "-n",
            namespace,
            "--timeout=60s",
        ],
        check=True,
        capture_output=True,
    )
    body = md(kube, namespace, "ranker")
    assert body["status"]["stableRevision"] != stable and body["status"]["history"][1]["revision"] == stable
    assert weights(body) == {"stable": 100}
    reasons = [
        e["reason"]
        for e in kube.json("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=ranker")["items"]
    ]
    assert {"RolloutStarted", "StepCompleted", "Promoted"} <= set(reasons)
    # The old stable keeps its pods for the scale-down delay, for an instant rollback.
    previous = kube.json("get", "deployment", f"ranker-{stable}", "-n", namespace)
    assert previous["metadata"]["labels"]["cutover.dev/role"] == "previous"


def test_rollback_verdict_returns_to_stable(kube: Kube, namespace: str, operator: Operator) -> None:
    doc = fast_canary()
    stable = deploy_v1(kube, namespace, doc)
    operator.verdict("ranker", "continue")
    new_version(kube, namespace, doc, "v3-bad")
    wait_until(lambda: weights(md(kube, namespace, "ranker")).get("candidate"), what="candidate traffic")
    candidate = md(kube, namespace, "ranker")["status"]["candidateRevision"]
    operator.verdict("ranker", "rollback", reason="error-rate ratio 3.1 in [2.2, 4.4]")
    body = wait_until(
        lambda: (b := md(kube, namespace, "ranker"))["status"]["phase"] == "RolledBack" and b, what="RolledBack"
    )
    assert body["status"]["stableRevision"] == stable and weights(body) == {"stable": 100}
    assert condition(body, "RolledBack")["status"] == "True"
    assert "error-rate ratio 3.1" in body["status"]["message"]
    wait_until(
        lambda: kube.run("get", "deployment", f"ranker-{candidate}", "-n", namespace, check=False).returncode != 0,
        what="the candidate deployment to go",
    )


def test_on_call_annotations_and_the_kubectl_plugin(kube: Kube, namespace: str, operator: Operator) -> None:
    doc = fast_canary()
    first = deploy_v1(kube, namespace, doc)
    operator.verdict("ranker", "continue")
    new_version(kube, namespace, doc, "v2")
    wait_until(lambda: md(kube, namespace, "ranker")["status"].get("currentStepIndex") == 1, what="step 1")

    def plugin(*args: str) -> str:
        """`kubectl cutover ...` as an on-call engineer types it: kubectl finds the plugin on PATH."""
        env = {**os.environ, "KUBECONFIG": kube.kubeconfig}
        done = subprocess.run(["kubectl", "cutover", "-n", namespace, *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    plugin("pause", "ranker")
    wait_until(lambda: md(kube, namespace, "ranker")["status"]["phase"] == "Paused", what="Paused")
    plugin("resume", "ranker")
    wait_until(lambda: md(kube, namespace, "ranker")["status"]["phase"] == "Progressing", what="resumed")
    plugin("promote", "ranker")  # skip the analysis step
    wait_until(lambda: md(kube, namespace, "ranker")["status"].get("currentStepIndex", 0) >= 2, what="next step")
    plugin("promote", "--full", "ranker")
    wait_until(lambda: condition(md(kube, namespace, "ranker"), "Promoted").get("status") == "True", what="promoted")
    second = md(kube, namespace, "ranker")["status"]["stableRevision"]
    summary = plugin("status", "ranker")
    assert f"Stable:     {second}" in summary and "Promoted           True" in summary

    kube.run("annotate", "--overwrite", "md/ranker", "-n", namespace, f"cutover.dev/rollback-to={first}")
    body = wait_until(
        lambda: (b := md(kube, namespace, "ranker"))["status"]["stableRevision"] == first and b, what="rollback-to"
    )
    handled = body["status"]["handledRequests"]
    assert [h["action"] for h in handled][:5] == ["rollbackTo", "promote", "promote", "resume", "pause"]
    assert handled[0]["by"] == "kubectl-annotate" and handled[0]["result"] == f"rolled back to {first}"
    # The annotation stays (no drift for GitOps) and is not handled again.
    operator.wait_passes(2)
    again = md(kube, namespace, "ranker")
    assert again["metadata"]["annotations"]["cutover.dev/rollback-to"] == first
    assert len(again["status"]["handledRequests"]) == len(handled)
    history = plugin("history", "ranker")
    assert first in history and second in history
    # An invalid request is answered, not retried in a loop.
    kube.run("annotate", "--overwrite", "md/ranker", "-n", namespace, "cutover.dev/rollback-to=ffffffffff")
    body = wait_until(
        lambda: (b := md(kube, namespace, "ranker"))["status"]["handledRequests"][0]["id"] == "ffffffffff" and b,
        what="the invalid request answered",
    )
    assert "not in the revision history" in body["status"]["handledRequests"][0]["result"]


def test_killed_operator_resumes_without_skipping_or_repeating_a_step(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    doc = fast_canary()
    pauses = [{"pause": {"duration": "4s"}} for _ in range(10)]
    doc["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 10}, *pauses[:5], {"setWeight": 50}, *pauses[5:]]
    deploy_v1(kube, namespace, doc)
    operator.verdict("ranker", "promote")
    new_version(kube, namespace, doc, "v2")
    rng = random.Random(20261122)
    seen: list[tuple[int, str]] = []

    def observe() -> dict[str, Any]:
        status = md(kube, namespace, "ranker")["status"]
        mark = (status.get("currentStepIndex", -1), status.get("stepStartedAt", ""))
        if status.get("candidateRevision") and (not seen or seen[-1] != mark):
            seen.append(mark)
        return status

    kills = 0
    while kills < 20:
        deadline = time.monotonic() + rng.uniform(0.3, 1.5)
        while time.monotonic() < deadline:
            status = observe()
            time.sleep(0.1)
        if not status.get("candidateRevision"):
            break
        operator.kill()
        kills += 1
        operator.start()
    wait_until(lambda: not observe().get("candidateRevision"), timeout=120, what="the rollout to finish")
    assert kills == 20, f"the rollout finished after only {kills} kills"
    body = md(kube, namespace, "ranker")
    assert body["status"]["phase"] in ("Healthy", "Progressing") and condition(body, "Promoted")["status"] == "True"
    indexes = [i for i, _ in seen]
    assert indexes == sorted(indexes), f"a step was repeated: {seen}"
    from datetime import datetime

    starts = {i: datetime.fromisoformat(t) for i, t in seen if t}
    steps = doc["spec"]["strategy"]["canary"]["steps"]
    for i, step in enumerate(steps):
        if "pause" in step and i in starts and i + 1 in starts:
            assert (starts[i + 1] - starts[i]).total_seconds() >= 4, f"pause step {i} was cut short: {seen}"
    events = kube.json("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=ranker")["items"]
    completed = [e for e in events if e["reason"] == "StepCompleted"]
    messages = [e["message"] for e in completed]
    assert len(messages) == len(set(messages)), f"a step completed twice: {messages}"
    assert sum(e.get("count", 1) for e in completed) <= len(steps)


def test_gateway_api_provider_gets_a_weighted_httproute(kube: Kube, namespace: str, operator: Operator) -> None:
    doc = fast_canary(
        traffic={
            "provider": "gatewayAPI",
            "gatewayAPI": {"parentRefs": [{"name": "edge"}], "hostnames": ["ranker.example.com"]},
        }
    )
    stable = deploy_v1(kube, namespace, doc)
    operator.verdict("ranker", "continue")
    new_version(kube, namespace, doc, "v2")

    def route_weights() -> dict[str, int]:
        done = kube.run("get", "httproute", "ranker", "-n", namespace, "-o", "json", check=False)
        if done.returncode:
            return {}
        import json

        rule = json.loads(done.stdout)["spec"]["rules"][0]
        return {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}

    candidate_weights = wait_until(lambda: len(w := route_weights()) == 2 and w, what="a two-backend route")
    assert candidate_weights[f"ranker-{stable}"] == 80 and sorted(candidate_weights.values()) == [20, 80]


def test_new_model_deployment_rolls_out_one_replicaset_per_revision(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    """The canary example (``range: {min: -10, max: 10}``) once got two ReplicaSets for one
    revision: the first pass wrote ``10.0`` into the pod args, the next one ``10`` (the source
    read back from status after the API server's JSON round trip)."""
    doc = load("modeldeployment-canary.yaml")
    doc["metadata"].pop("namespace")
    bind_volume(kube, namespace, "models")
    kube.apply(doc, namespace=namespace)
    body = wait_until(
        lambda: (b := md(kube, namespace, "fraud-scorer")).get("status", {}).get("phase") == "Healthy" and b,
        timeout=90,
        what="the canary example to be Healthy",
    )
    revision = body["status"]["stableRevision"]
    assert body["status"]["history"][0]["spec"]["model"]["inputs"][0]["range"] == {"min": -10, "max": 10}
    deployment = kube.json("get", "deployment", f"fraud-scorer-{revision}", "-n", namespace)
    assert deployment["metadata"]["generation"] == 1, "the pod template was rewritten after creation"
    sets = kube.json("get", "replicasets", "-n", namespace, "-l", "cutover.dev/model=fraud-scorer")["items"]
    assert [s["metadata"]["labels"]["cutover.dev/revision"] for s in sets] == [revision]


@pytest.mark.parametrize(("sharing", "node"), [("timeSlicing", "gpu-l4-shared-0"), ("mps", "gpu-t4-mps-0")])
def test_shared_gpu_pods_land_on_nodes_that_share_gpus_that_way(
    kube: Kube, namespace: str, operator: Operator, sharing: str, node: str
) -> None:
    doc = fast_canary("shared-model")
    doc["spec"]["runtime"]["gpu"] = {"count": 1, "sharing": sharing}
    kube.apply(doc, namespace=namespace)
    pods = healthy_pods(kube, namespace, "shared-model")
    assert len(pods) == 2 and {p["spec"]["nodeName"] for p in pods} == {node}
    for pod in pods:
        assert pod["spec"]["containers"][0]["resources"]["limits"] == {"memory": "2Gi", "nvidia.com/gpu.shared": "1"}
    capacity = condition(md(kube, namespace, "shared-model"), "GPUCapacity")
    assert capacity["status"] == "True" and "nvidia.com/gpu.shared" in capacity["message"]


def gone(kube: Kube, *args: str) -> bool:
    return kube.run("get", *args, check=False).returncode != 0


def test_namespace_deletion_completes_once_the_operator_is_gone(kube: Kube, namespace: str, operator: Operator) -> None:
    """The order a platform engineer meets: operator uninstalled (or scaled to 0), then the
    namespace deleted. Nothing may wait for an operator that is not coming back."""
    deploy_v1(kube, namespace, fast_canary())
    assert not md(kube, namespace, "ranker")["metadata"].get("finalizers")
    operator.stop()
    kube.run("delete", "namespace", namespace, "--wait=false")
    wait_until(lambda: gone(kube, "namespace", namespace), timeout=90, what=f"namespace {namespace} to be gone")


def test_an_upgrade_strips_the_finalizer_earlier_versions_added(kube: Kube, namespace: str, tmp_path: Path) -> None:
    """Objects from an earlier version carry cutover.dev/finalizer, one of them already
    Terminating; the operator's first look removes it from both and the live one still runs."""
    live, terminating = fast_canary("live"), fast_canary("terminating")
    for doc in (live, terminating):
        doc["metadata"]["finalizers"] = ["cutover.dev/finalizer"]
    kube.apply(live, terminating, namespace=namespace)
    kube.run("delete", "md", "terminating", "-n", namespace, "--wait=false")
    operator = Operator(kube, namespace, tmp_path).start()
    try:
        wait_until(lambda: gone(kube, "md", "terminating", "-n", namespace), what="the terminating object to go")
        body = wait_until(
            lambda: (b := md(kube, namespace, "live")).get("status", {}).get("stableRevision") and b,
            what="the live object to be reconciled",
        )
        wait_until(
            lambda: not md(kube, namespace, "live")["metadata"].get("finalizers"), what="the old finalizer to go"
        )
        assert body["status"]["phase"] in ("Progressing", "Healthy")
    finally:
        operator.stop()
