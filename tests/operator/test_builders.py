"""Pure builders: what a platform engineer would check in the generated children."""

from __future__ import annotations

import copy
from typing import Any

from cutover.api.v1alpha1 import ModelDeployment
from cutover.api.v1alpha1.modeldeployment import TrafficEntry
from cutover.operator import builders, cli, gpu
from cutover.operator.rollout import Source, Workload

from ..cases import load


def model(example: str, **spec: object) -> ModelDeployment:
    doc = copy.deepcopy(load(example))
    doc["metadata"].update(uid="3f1c", generation=1)
    doc["spec"].update(spec)
    return ModelDeployment.model_validate(doc)


def workload(md: ModelDeployment, role: str = "stable", replicas: int = 2) -> Workload:
    wire = md.spec.wire()
    return Workload("abc123", role, replicas, Source(wire["model"], wire["runtime"]))  # type: ignore[arg-type]


def test_gpu_deployment_requests_the_mig_slice_on_the_right_nodes() -> None:
    md = model("modeldeployment-gpu-mig.yaml")
    pod = builders.deployment(md, workload(md))["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "vision", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "vision-models"
    assert "--max-batch-size" in container["args"] and "--model-uri" in container["args"]


def test_pods_run_restricted_and_are_scraped() -> None:
    md = model("modeldeployment-canary.yaml")
    deployment = builders.deployment(md, workload(md))
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    security = pod["spec"]["containers"][0]["securityContext"]
    assert (
        security["runAsNonRoot"] and security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    )
    assert builders.LABEL_ROLE not in pod["metadata"]["labels"]  # a role change must not restart pods
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "3f1c"


def test_s3_models_are_fetched_by_an_init_container() -> None:
    md = model("modeldeployment-bluegreen.yaml")
    pod = builders.deployment(md, workload(md))["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"][:2] == ["s3", "cp"]
    assert "--model-uri" in pod["containers"][0]["args"]


def test_a_tensorflow_savedmodel_is_copied_whole_and_served_as_onnx_is() -> None:
    def pod(storage_uri: str) -> dict[str, Any]:
        spec = {"name": "churn-model", "version": "v15", "format": "tensorflow", "storageUri": storage_uri}
        md = model("modeldeployment-bluegreen.yaml", model=spec)
        built: dict[str, Any] = builders.deployment(md, workload(md))["spec"]["template"]["spec"]
        return built

    uri = "s3://ml-artifacts/churn/v15/"
    from_s3 = pod(uri)
    assert from_s3["initContainers"][0]["args"] == ["s3", "cp", uri, "/models/v15", "--recursive"]
    parsed = cli.parser().parse_args(from_s3["containers"][0]["args"])  # the builder speaks cutover serve's flags
    assert (parsed.format, parsed.model_uri, parsed.checksum) == ("tensorflow", "/models/v15", None)
    on_pvc = pod("pvc://models/churn/v15")["containers"][0]["args"]
    assert cli.parser().parse_args(on_pvc).model_uri == "/models/models/churn/v15"
    single_file = model("modeldeployment-bluegreen.yaml")
    init = builders.deployment(single_file, workload(single_file))["spec"]["template"]["spec"]["initContainers"]
    assert "--recursive" not in init[0]["args"]


def test_min_gpu_memory_becomes_node_affinity() -> None:
    md = model("modeldeployment-canary.yaml")
    wire = md.spec.wire()
    wire["runtime"]["gpu"] = {"count": 1, "minMemoryMiB": 40000}
    pod = builders.deployment(md, Workload("r", "stable", 1, Source(wire["model"], wire["runtime"])))["spec"][
        "template"
    ]
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["39999"]} in terms[0]["matchExpressions"]


def test_httproute_weights_mirror_and_session_persistence() -> None:
    doc = copy.deepcopy(load("modeldeployment-abtest.yaml"))
    doc["metadata"]["uid"] = "3f1c"
    doc["spec"]["traffic"] = {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "edge"}]}}
    doc["spec"]["strategy"]["abTest"]["assignment"]["by"] = "cookie"
    md = ModelDeployment.model_validate(doc)
    traffic = [
        TrafficEntry(revision="a", role="stable", weight=50, service="s-a"),
        TrafficEntry(revision="b", role="candidate", weight=50, mirror_percent=0, service="s-b"),
    ]
    route = builders.http_route(md, traffic)
    assert route is not None
    rule = route["spec"]["rules"][0]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [("s-a", 50), ("s-b", 50)]
    assert rule["sessionPersistence"] == {"sessionName": "X-User-Id", "type": "Cookie"}
    shadow = [
        TrafficEntry(revision="a", role="stable", weight=100, service="s-a"),
        TrafficEntry(revision="b", role="candidate", weight=0, mirror_percent=30, service="s-b"),
    ]
    mirrored = builders.http_route(md, shadow)
    assert mirrored is not None
    assert mirrored["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] == 30


def test_gpu_preflight_counts_free_devices_per_node() -> None:
    def node(name: str, gpus: int, product: str) -> dict[str, object]:
        return {
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}},
            "spec": {},
        }

    def pod(node_name: str, gpus: int) -> dict[str, object]:
        return {
            "spec": {"nodeName": node_name, "containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": "Running"},
        }

    nodes = [node("a", 4, "A100"), node("b", 4, "A100"), node("c", 2, "L4")]
    pods = [pod("a", 3), pod("b", 2)]
    used = gpu.requested(pods, "nvidia.com/gpu")
    assert gpu.free_pods(nodes, used, "nvidia.com/gpu", 2).free_pods == 0 + 1 + 1
    assert gpu.free_pods(nodes, used, "nvidia.com/gpu", 2, product="A100").free_pods == 1
    assert gpu.free_pods(nodes, used, "nvidia.com/gpu", 1, product="A100").free_pods == 3


def test_serving_args_carry_schema_fallback_and_a_promotion_proof_previous_version() -> None:
    import json

    md = model("modeldeployment-canary.yaml")
    candidate = Workload("def456", "candidate", 1, workload(md).source)
    args = builders.deployment(md, candidate)["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert json.loads(flags["--fallback"])["confidenceThreshold"] == 0.6
    assert flags["--previous-url"] == "http://fraud-scorer-stable:8080"
    assert "--shutdown-delay" in args
    stable_args = builders.deployment(md, workload(md))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert stable_args == [a.replace("def456", "abc123") for a in args], "a role change must not change pod args"
    children = builders.children(md, (workload(md), candidate), [])
    alias = next(c for c in children if c["metadata"]["name"] == "fraud-scorer-stable")
    assert alias["spec"]["selector"][builders.LABEL_REVISION] == "abc123"
    assert alias["spec"]["clusterIP"] == "None", "the fallback link resolves the pods: no cluster IP to allocate"
    parsed = cli.parser().parse_args(args)  # the builder speaks cutover serve's flags
    assert parsed.revision == "def456" and parsed.inputs


def test_pod_template_does_not_depend_on_the_key_order_of_the_spec() -> None:
    """The API server may hand the spec back with keys in another order; the template must not change."""
    md = model("modeldeployment-gpu-mig.yaml")
    stable = workload(md)
    wire = md.spec.wire()
    for key in ("inputs", "outputs"):
        wire["model"][key] = [dict(reversed(tensor.items())) for tensor in wire["model"][key]]
    reordered = Workload(stable.revision, stable.role, stable.replicas, Source(wire["model"], wire["runtime"]))  # type: ignore[arg-type]
    assert builders.deployment(md, reordered)["spec"]["template"] == builders.deployment(md, stable)["spec"]["template"]


def gpu_pod(gpu_spec: dict[str, object], **runtime: object) -> dict[str, object]:
    """The pod spec of the canary example run with ``runtime.gpu = gpu_spec`` (and more runtime)."""
    md = model("modeldeployment-canary.yaml")
    wire = md.spec.wire()
    wire["runtime"].update(gpu=gpu_spec, **runtime)
    source = Source(wire["model"], wire["runtime"])
    pod: dict[str, object] = builders.deployment(md, Workload("r", "stable", 1, source))["spec"]["template"]["spec"]
    return pod


def required_expressions(pod: dict[str, object]) -> list[list[dict[str, object]]]:
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]  # type: ignore[index]
    return [term["matchExpressions"] for term in terms]


def test_shared_gpus_request_the_shared_replica_on_nodes_that_share_that_way() -> None:
    """runtime.gpu.sharing as the NVIDIA device plugin does it: the renamed replica resource
    and the sharing-strategy label that GPU feature discovery puts on the node."""
    for sharing, label in (("timeSlicing", "time-slicing"), ("mps", "mps")):
        pod = gpu_pod({"count": 1, "sharing": sharing})
        resources = pod["containers"][0]["resources"]  # type: ignore[index]
        assert resources["limits"] == {"memory": "2Gi", "nvidia.com/gpu.shared": 1}
        assert resources["requests"]["nvidia.com/gpu.shared"] == 1 and "nvidia.com/gpu" not in resources["requests"]
        expected = {"key": "nvidia.com/gpu.sharing-strategy", "operator": "In", "values": [label]}
        assert all(expected in term for term in required_expressions(pod))
    mig = gpu_pod({"count": 1, "migProfile": "1g.10gb", "sharing": "timeSlicing"})
    assert mig["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb.shared"] == 1  # type: ignore[index]
    exclusive = gpu_pod({"count": 2})
    assert exclusive["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2  # type: ignore[index]
    assert "affinity" not in exclusive


def test_sharing_requirement_joins_every_term_of_the_users_own_node_affinity() -> None:
    own = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                ]
            }
        }
    }
    pod = gpu_pod({"count": 1, "sharing": "mps", "minMemoryMiB": 20000}, affinity=own)
    for zone, term in zip("ab", required_expressions(pod), strict=True):
        assert term == [
            {"key": "zone", "operator": "In", "values": [zone]},
            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["19999"]},
            {"key": "nvidia.com/gpu.sharing-strategy", "operator": "In", "values": ["mps"]},
        ]


def test_gpu_requirements_do_not_pile_up_in_the_revisions_source() -> None:
    """The builder once extended the source's own affinity lists in place: every pass added the
    GPU memory requirement again, so the pod template changed on every reconcile."""
    md = model("modeldeployment-canary.yaml")
    wire = md.spec.wire()
    wire["runtime"]["gpu"] = {"count": 1, "minMemoryMiB": 40000}
    wire["runtime"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
            }
        }
    }
    stable = Workload("r", "stable", 1, Source(wire["model"], wire["runtime"]))
    first = builders.deployment(md, stable)["spec"]["template"]
    assert builders.deployment(md, stable)["spec"]["template"] == first
    assert len(wire["runtime"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
               ["nodeSelectorTerms"][0]["matchExpressions"]) == 1  # fmt: skip


def test_gpu_preflight_counts_shared_replicas_on_nodes_sharing_that_way() -> None:
    def node(name: str, sharing: str, allocatable: dict[str, str], pool: str = "gpu") -> dict[str, object]:
        labels = {"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.sharing-strategy": sharing, "pool": pool}
        return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": allocatable}, "spec": {}}

    nodes = [
        node("whole", "none", {"nvidia.com/gpu": "2"}),
        node("sliced", "time-slicing", {"nvidia.com/gpu": "0", "nvidia.com/gpu.shared": "8"}),
        node("sliced-elsewhere", "time-slicing", {"nvidia.com/gpu.shared": "8"}, pool="other"),
        node("mps", "mps", {"nvidia.com/gpu.shared": "4"}),
    ]
    used = {"spec": {"nodeName": "sliced", "containers": [{"resources": {"requests": {"nvidia.com/gpu.shared": "3"}}}]}}
    runtime = {"gpu": {"count": 1, "sharing": "timeSlicing"}, "nodeSelector": {"pool": "gpu"}}
    capacity = gpu.preflight(nodes, [used], runtime)
    assert capacity is not None
    assert (capacity.resource, capacity.free_pods) == ("nvidia.com/gpu.shared", 5)
    assert "time-slicing" in capacity.detail
    mps = gpu.preflight(nodes, [used], {"gpu": {"count": 1, "sharing": "mps"}})
    assert mps is not None and mps.free_pods == 4
    whole = gpu.preflight(nodes, [used], {"gpu": {"count": 1}})
    assert whole is not None and (whole.resource, whole.free_pods) == ("nvidia.com/gpu", 2)
    assert gpu.preflight(nodes, [], {"replicas": 2}) is None
    # The resource the operator passes today counts shared replicas, not whole GPUs.
    assert gpu.resource(runtime["gpu"]) == ("nvidia.com/gpu.shared", 1)


def test_the_prediction_cache_reaches_cutover_serve_as_its_flags() -> None:
    md = model("modeldeployment-gpu-mig.yaml")
    args = builders.deployment(md, workload(md))["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = cli.parser().parse_args(args)
    assert (parsed.prediction_cache_entries, parsed.prediction_cache_bytes, parsed.prediction_cache_ttl) == (
        100000,
        64 << 20,
        "1h",
    )
    uncached = model("modeldeployment-canary.yaml")
    args = builders.deployment(uncached, workload(uncached))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(arg.startswith("--prediction-cache") for arg in args)


def test_serving_pods_and_services_declare_the_grpc_port_cutover_serve_listens_on() -> None:
    from hack.runner import local_args

    md = model("modeldeployment-canary.yaml")
    container = builders.deployment(md, workload(md))["spec"]["template"]["spec"]["containers"][0]
    declared = {port["name"]: port["containerPort"] for port in container["ports"]}
    parsed = cli.parser().parse_args(container["args"])
    assert (parsed.port, parsed.grpc_port) == (declared["http"], declared["grpc"])
    for service in (
        builders.service(md, workload(md)),
        builders.stable_service(md, "abc123"),
        builders.shared_service(md, []),
    ):
        ports = {port["name"]: port for port in service["spec"]["ports"]}
        assert (ports["grpc"]["port"], ports["grpc"]["targetPort"]) == (declared["grpc"], "grpc")
    # Revisions started on loopback by hack/runner.py would all take the pod's gRPC port.
    assert cli.parser().parse_args(local_args(container["args"], 9000)).grpc_port is None


def test_serving_pods_trace_only_when_the_operator_is_given_an_otlp_endpoint() -> None:
    md = model("modeldeployment-canary.yaml")
    traced = builders.children(md, (workload(md),), [], "http://otel-collector:4318")[0]
    assert traced["kind"] == "Deployment"
    args = traced["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cli.parser().parse_args(args).otlp_endpoint == "http://otel-collector:4318"
    untraced = builders.deployment(md, workload(md))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--otlp-endpoint" not in untraced


def test_the_explain_endpoint_s_limits_reach_cutover_serve_as_its_flags() -> None:
    md = model(
        "modeldeployment-canary.yaml", runtime={"explain": {"maxInFlight": 3, "timeout": "1m30s", "background": 20}}
    )
    args = builders.deployment(md, workload(md))["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = cli.parser().parse_args(args)
    assert (parsed.explain_max_in_flight, parsed.explain_timeout, parsed.explain_background) == (3, 90.0, 20)
    off = model("modeldeployment-canary.yaml", runtime={"explain": {"enabled": False}})
    args = builders.deployment(off, workload(off))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cli.parser().parse_args(args).explain_max_in_flight == 0  # cutover serve answers 501
    unset = model("modeldeployment-canary.yaml")
    args = builders.deployment(unset, workload(unset))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(arg.startswith("--explain") for arg in args)
    sampled = model("modeldeployment-canary.yaml", runtime={"explain": {"sampleRate": 0.05}})
    args = builders.deployment(sampled, workload(sampled))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cli.parser().parse_args(args).explain_sample_rate == 0.05
    assert parsed.explain_sample_rate == 0  # unset: nothing sampled
