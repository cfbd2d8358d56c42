"""The operator on the real control plane: examples produce the right children, verdicts and
annotations drive rollouts, GPU capacity is reported, and a killed operator resumes exactly."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cutover.api.contract import LABEL_MODEL
from cutover.api.v1alpha1 import seconds as seconds_of
from cutover.operator.leader import LOST_EXIT_CODE
from tests.support import kstatus
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from ..cases import EXAMPLES, load
from .operator_support import Operator, leader_and_standby

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
    assert (condition(body, "Reconciling")["status"], condition(body, "Reconciling")["reason"]) == (
        "True",
        "RolloutInProgress",
    )
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


def test_rollback_verdict_returns_to_stable(kube: Kube, namespace: str, operator: Operator, tmp_path: Path) -> None:
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
    # Flux fails its health check at once: kstatus reads the object the API server returns as Failed.
    assert (condition(body, "Stalled")["status"], condition(body, "Stalled")["reason"]) == ("True", "RolledBack")
    served = tmp_path / "ranker.json"
    served.write_text(kube.run("get", "md/ranker", "-n", namespace, "-o", "json").stdout)
    assert kstatus.read(kstatus.command(), [served])["ranker"]["status"] == "Failed"
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


def pausing_canary(pause: str, pauses: int = 10) -> dict[str, Any]:
    """A canary of two weights, each followed by half of ``pauses`` pauses of ``pause``, for
    tests that interrupt it."""
    doc = fast_canary()
    half = [{"pause": {"duration": pause}} for _ in range(pauses // 2)]
    doc["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 10}, *half, {"setWeight": 50}, *half]
    return doc


class StepLog:
    """A rollout's steps as a test sees them: each (currentStepIndex, stepStartedAt) that status
    showed, and at the end the StepCompleted events, which together prove that no step was
    skipped, repeated or cut short however often the operator was interrupted."""

    def __init__(self, kube: Kube, namespace: str, doc: dict[str, Any]) -> None:
        self.kube, self.namespace, self.name = kube, namespace, doc["metadata"]["name"]
        self.steps: list[dict[str, Any]] = doc["spec"]["strategy"]["canary"]["steps"]
        self.seen: list[tuple[int, str]] = []

    def observe(self) -> dict[str, Any]:
        """The status now, its step recorded when it changed."""
        status: dict[str, Any] = md(self.kube, self.namespace, self.name)["status"]
        mark = (status.get("currentStepIndex", -1), status.get("stepStartedAt", ""))
        if status.get("candidateRevision") and (not self.seen or self.seen[-1] != mark):
            self.seen.append(mark)
        return status

    def watch(self, seconds: float) -> dict[str, Any]:
        """Observe for ``seconds`` (the time between two interruptions); the last status."""
        deadline = time.monotonic() + seconds
        status = self.observe()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            status = self.observe()
        return status

    def check_promoted_step_by_step(self, events_lost: int = 0) -> None:
        """The rollout ended promoted; steps went forward only, no pause ended early, and each
        step completed exactly once: its StepCompleted event is there once, except for at most
        ``events_lost`` steps whose event may be missing (never repeated)."""
        wait_until(lambda: not self.observe().get("candidateRevision"), timeout=120, what="the rollout to finish")
        body = md(self.kube, self.namespace, self.name)
        assert body["status"]["phase"] in ("Healthy", "Progressing") and condition(body, "Promoted")["status"] == "True"
        indexes = [i for i, _ in self.seen]
        assert indexes == sorted(indexes), f"a step was repeated: {self.seen}"
        starts = {i: datetime.fromisoformat(t) for i, t in self.seen if t}
        for i, step in enumerate(self.steps):
            if "pause" in step and i in starts and i + 1 in starts:
                seconds = seconds_of(step["pause"]["duration"])
                assert (starts[i + 1] - starts[i]).total_seconds() >= seconds, f"pause {i} was cut short: {self.seen}"
        events = self.kube.json(
            "get", "events", "-n", self.namespace, "--field-selector", f"involvedObject.name={self.name}"
        )["items"]
        completed = Counter[str]()
        for event in events:
            if event["reason"] == "StepCompleted":
                completed[event["message"]] += event.get("count", 1)
        assert all(n == 1 for n in completed.values()), f"a step completed twice: {completed}"
        done = sorted(int(message.split()[2]) for message in completed)  # "canary step 3 done; now at ..."
        missing = set(range(len(self.steps))) - set(done)
        assert set(done) <= set(range(len(self.steps))) and len(missing) <= events_lost, f"steps completed: {done}"


def test_killed_operator_resumes_without_skipping_or_repeating_a_step(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    doc = pausing_canary("4s")
    deploy_v1(kube, namespace, doc)
    operator.verdict("ranker", "promote")
    new_version(kube, namespace, doc, "v2")
    rng = random.Random(20261122)
    steps = StepLog(kube, namespace, doc)
    kills = 0
    while kills < 20 and steps.watch(rng.uniform(0.3, 1.5)).get("candidateRevision"):
        operator.kill()
        kills += 1
        operator.start()
    assert kills == 20, f"the rollout finished after only {kills} kills"
    # A kill between a step's status write and its StepCompleted event loses that one event: the
    # next operator finds the step done, in status, and posts nothing (events are at most once;
    # a repeated one still fails). One run in several lost one; each kill can lose at most one.
    steps.check_promoted_step_by_step(events_lost=kills)


def test_a_standby_takes_over_from_a_killed_leader_within_15_s_and_never_writes_before(
    kube: Kube, namespace: str, replicas: list[Operator]
) -> None:
    """Two replicas electing a leader on a Lease; the leader SIGKILLed at ten random points of a
    rollout. Each time the standby leads within 15 s (4 to 5 s with LEASE_TIMING), until then the
    ModelDeployment is not written at all, and the rollout neither skips nor repeats a step. The
    standby finishes no reconcile pass while it waits: kopf does not even run in it."""
    doc = pausing_canary("8s")
    deploy_v1(kube, namespace, doc)
    replicas[0].verdict("ranker", "promote")
    new_version(kube, namespace, doc, "v2")
    rng = random.Random(20261201)
    steps = StepLog(kube, namespace, doc)
    takeovers: list[float] = []
    while len(takeovers) < 10 and steps.watch(rng.uniform(0.3, 3.0)).get("candidateRevision"):
        leader, standby = leader_and_standby(replicas)
        assert standby.passes() == 0, "the standby reconciled while the leader held the Lease"
        leader.kill()
        killed_at, written = time.monotonic(), md(kube, namespace, "ranker")["metadata"]["resourceVersion"]

        def took_over(standby: Operator = standby, written: str = written) -> bool:
            version = md(kube, namespace, "ranker")["metadata"]["resourceVersion"]
            if not standby.leading():  # read after the object: nobody led when it was read
                assert version == written, "the ModelDeployment was written while nobody held the Lease"
                return False
            return bool(standby.passes())

        wait_until(took_over, timeout=15, interval=0.1, what="the standby to take over")
        takeovers.append(time.monotonic() - killed_at)
        leader.start()  # back, as the standby
    assert len(takeovers) == 10, f"the rollout finished after only {len(takeovers)} takeovers"
    steps.check_promoted_step_by_step()
    print(f"takeovers: {' '.join(f'{t:.1f}' for t in takeovers)} s")


def holder(kube: Kube, namespace: str) -> str:
    return str(kube.json("get", "lease", "cutover-operator", "-n", namespace)["spec"].get("holderIdentity", ""))


def test_a_stopped_leader_releases_the_lease_so_the_standby_need_not_wait_it_out(
    kube: Kube, namespace: str, replicas: list[Operator]
) -> None:
    """SIGTERM (a rolling upgrade, a drained node): the leader stops kopf, then gives the Lease up."""
    leader, standby = leader_and_standby(replicas)
    before = holder(kube, namespace)
    assert leader.stop() == 0
    assert holder(kube, namespace) != before  # released: nobody's, or already the standby's
    wait_until(standby.leading, timeout=10, what="the standby to lead")


def test_a_leader_whose_lease_was_taken_exits_and_the_standby_respects_the_new_holder(
    kube: Kube, namespace: str, replicas: list[Operator]
) -> None:
    """Someone else writes the Lease (another operator installed over the same one, a person):
    the leader finds it at its next renewal and exits with status 3; the standby waits for the
    new holder's lease duration like any other."""
    leader, standby = leader_and_standby(replicas)
    taken = {"spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 600}}
    kube.run("patch", "lease", "cutover-operator", "-n", namespace, "--type=merge", "-p", json.dumps(taken))
    assert leader.exited(timeout=10) == LOST_EXIT_CODE
    time.sleep(5)  # a window longer than the tests' lease duration (4 s), in which nothing may change
    assert standby.leading() is False and holder(kube, namespace) == "someone-else"


def test_a_leader_cut_off_from_the_api_server_steps_down_and_nothing_is_applied_twice(
    kube: Kube, namespace: str, replicas: list[Operator]
) -> None:
    """The API server stops answering mid-rollout (a restart, a partition): the leader exits with
    status 3 once its renew deadline passes; the rollout then goes on under whichever replica
    takes the Lease, each step completed once."""
    if kube.pid_dir is None:
        pytest.skip("the control plane was not started by hack/cluster")
    doc = pausing_canary("2s", pauses=4)
    deploy_v1(kube, namespace, doc)
    replicas[0].verdict("ranker", "promote")
    new_version(kube, namespace, doc, "v2")
    steps = StepLog(kube, namespace, doc)
    steps.watch(1.0)
    leader, standby = leader_and_standby(replicas)
    apiserver = int((kube.pid_dir / "kube-apiserver.pid").read_text())
    os.kill(apiserver, signal.SIGSTOP)
    try:
        status = leader.exited(timeout=15)
    finally:
        os.kill(apiserver, signal.SIGCONT)
    assert status == LOST_EXIT_CODE and standby.process is not None and standby.process.poll() is None
    leader.start()  # restarted by its Deployment, as a standby
    # A status write in flight when the API server froze lands when it resumes, after the leader
    # that sent it has exited: the step is done once, in status, but the event that leader would
    # have posted next is never posted, and the new leader finds the step already done.
    steps.check_promoted_step_by_step(events_lost=1)


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


def test_deletion_completes_once_the_operator_is_gone(kube: Kube, namespace: str, operator: Operator) -> None:
    """The order a platform engineer meets: operator uninstalled (or scaled to 0), then its
    objects or their namespace deleted. Nothing may wait for an operator that is not coming back:
    no object of any kind it handles carries a finalizer, once it has handled them."""
    deploy_v1(kube, namespace, fast_canary())
    others = [load("safetypolicy.yaml"), load("alertrule.yaml")]
    for doc in others:
        doc["metadata"].pop("namespace")
    others[1]["spec"]["interval"] = "1s"  # its first evaluation writes its status
    kube.apply(*others, namespace=namespace)
    wait_until(
        lambda: all(
            item.get("status") for item in kube.json("get", "safetypolicy,alertrule", "-n", namespace)["items"]
        ),
        what="the SafetyPolicy and the AlertRule handled",
    )
    kinds = ["modeldeployment", "safetypolicy", "alertrule"]
    for item in kube.json("get", ",".join(kinds), "-n", namespace)["items"]:
        assert not item["metadata"].get("finalizers"), item["metadata"]
    assert operator.stop() == 0, "SIGTERM did not stop the operator within 20 s"  # each loop waited out 10 s
    kube.run("delete", ",".join(kinds), "--all", "-n", namespace, "--timeout=60s")
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


def test_an_upgrade_recreates_the_stable_service_an_earlier_version_gave_a_cluster_ip(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """Earlier versions made the fallback chain's ``<name>-stable`` Service with a cluster IP;
    the API server refuses to change ``spec.clusterIP`` in place, so the operator deletes it and
    creates it headless, and the ModelDeployment becomes Healthy as if nothing were in its way."""
    doc = fast_canary("upgraded")
    assert doc["spec"]["fallback"]["previousVersion"]
    kube.apply(doc, namespace=namespace)
    uid = md(kube, namespace, "upgraded")["metadata"]["uid"]
    old = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "upgraded-stable",
            "namespace": namespace,
            "labels": {LABEL_MODEL: "upgraded", "app.kubernetes.io/managed-by": "cutover"},
            "ownerReferences": [
                {"apiVersion": "cutover.dev/v1alpha1", "kind": "ModelDeployment", "name": "upgraded", "uid": uid}
            ],
        },
        "spec": {"selector": {LABEL_MODEL: "upgraded"}, "ports": [{"name": "http", "port": 8080}]},
    }
    kube.apply(old, namespace=namespace)
    assert kube.json("get", "service", "upgraded-stable", "-n", namespace)["spec"]["clusterIP"] != "None"
    operator = Operator(kube, namespace, tmp_path).start()
    try:
        healthy_pods(kube, namespace, "upgraded")
        service = kube.json("get", "service", "upgraded-stable", "-n", namespace)
        assert service["spec"]["clusterIP"] == "None"
        assert service["metadata"]["ownerReferences"][0]["uid"] == uid
        assert set(service["spec"]["selector"]) == {LABEL_MODEL, "cutover.dev/revision"}
    finally:
        operator.stop()
