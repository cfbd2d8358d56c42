"""Pure builders of a ModelDeployment's children: one Deployment, Service and (with more than
one replica) PodDisruptionBudget per revision, the weighted HTTPRoute for the Gateway API
provider, and the NetworkPolicy over its serving pods when the operator is given one's sources.
Each child is a plain dict in wire form, named stably and owned by the ModelDeployment, ready for
server-side apply.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from cutover.api.contract import (
    LABEL_APP_NAME,
    LABEL_MANAGED_BY,
    MANAGER,
    PROBE_TIMEOUT_SECONDS,
    SAFETY_OBJECT_PREFIX,
    SAFETY_POLICY_DIR,
    SAFETY_POLICY_KEY,
    SAFETY_SECRETS_DIR,
    SERVING_APP_NAME,
    SERVING_GRPC_PORT,
    SERVING_PORT,
)

# The child labels, re-exported for the callers that read them off a built child.
from cutover.api.contract import LABEL_MODEL as LABEL_MODEL
from cutover.api.contract import LABEL_REVISION as LABEL_REVISION
from cutover.api.contract import LABEL_ROLE as LABEL_ROLE
from cutover.api.v1alpha1 import API_VERSION, seconds
from cutover.api.v1alpha1.base import ObjectMeta, as_stored
from cutover.api.v1alpha1.modeldeployment import ModelDeployment, TrafficEntry

from . import gpu
from .rollout import Workload

PORT = SERVING_PORT
GRPC_PORT = SERVING_GRPC_PORT
GPU_TAINT_KEY = "nvidia.com/gpu"
MODEL_DIR = "/models"
SHUTDOWN_DELAY_SECONDS = 5
"""Seconds a terminating serving pod keeps answering while endpoints drop it."""


def _canonical_json(value: Any) -> str:
    """One spelling of a value in pod args: sorted keys, numbers as the API server writes them.

    A revision's source comes from the parsed spec on one pass and from status (after the API
    server's JSON round trip: other key order, ``10`` for ``10.0``) on the next; both must give
    the same pod template, or every new ModelDeployment rolls its pods once."""
    return json.dumps(as_stored(value), sort_keys=True, separators=(",", ":"))


def controller_reference(kind: str, metadata: ObjectMeta) -> dict[str, Any]:
    """The owner reference that makes one of our objects (``kind``, cutover.dev/v1alpha1) the
    controlling owner of a child: the garbage collector deletes the child with it."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": metadata.name,
        "uid": metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    return controller_reference("ModelDeployment", md.metadata)


def child_name(md: ModelDeployment, revision: str) -> str:
    return f"{md.metadata.name}-{revision}"


def _metadata(md: ModelDeployment, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": md.metadata.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(md)],
    }


def serving_pods(md: ModelDeployment) -> dict[str, str]:
    """The labels that every serving pod of ``md`` carries, whatever its revision: what its
    NetworkPolicy and the chart's PodMonitor (by ``app.kubernetes.io/name``) select."""
    return {LABEL_MODEL: md.metadata.name or "", LABEL_APP_NAME: SERVING_APP_NAME}


def _storage(model: dict[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Where the serving process finds the model, plus volumes, mounts and init containers. A
    tensorflow model is a SavedModel directory: from s3 its whole prefix is copied."""
    uri: str = model.get("storageUri", "")
    if uri.startswith("pvc://"):
        claim, _, path = uri.removeprefix("pvc://").partition("/")
        volume = {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        mount = {"name": "model", "mountPath": f"{MODEL_DIR}/{claim}", "readOnly": True}
        return f"{MODEL_DIR}/{claim}/{path}", [volume], [mount], []
    if uri.startswith("s3://"):
        # Fetched before the server starts; credentials come from the pod's identity (IRSA,
        # EKS Pod Identity) or the standard AWS_* variables in runtime.env.
        filename = uri.rstrip("/").rsplit("/", 1)[-1]
        directory = model.get("format") == "tensorflow"
        volume = {"name": "model", "emptyDir": {}}
        mount = {"name": "model", "mountPath": MODEL_DIR}
        init = {
            "name": "fetch-model",
            "image": "public.ecr.aws/aws-cli/aws-cli:2.22.35",
            "args": ["s3", "cp", uri, f"{MODEL_DIR}/{filename}", *(["--recursive"] if directory else [])],
            "volumeMounts": [mount],
            "securityContext": _security_context(),
        }
        return f"{MODEL_DIR}/{filename}", [volume], [mount], [init]
    return uri, [], [], []


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _safety_policy(md: ModelDeployment) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Args, volumes and mounts that hand the referenced SafetyPolicy to serving: the rendered
    ConfigMap and the copied webhook Secret (see operator/safety.py), both optional, so a pod
    starts before the policy exists (serving then fails closed). Only the policy's name is in
    the pod template: a changed policy reaches running pods through the volume, with no new
    revision and no restart; a changed reference restarts every live revision's pods in place."""
    ref = md.spec.safety_policy_ref
    if ref is None:
        return [], [], []
    name = f"{SAFETY_OBJECT_PREFIX}{ref.name}"  # what operator/safety.py renders (object_name)
    args = ["--safety-policy", f"{SAFETY_POLICY_DIR}/{SAFETY_POLICY_KEY}", "--safety-secrets-dir", SAFETY_SECRETS_DIR]
    volumes = [
        {"name": "safety-policy", "configMap": {"name": name, "optional": True}},
        {"name": "safety-secrets", "secret": {"secretName": name, "optional": True}},
    ]
    mounts = [
        {"name": "safety-policy", "mountPath": SAFETY_POLICY_DIR, "readOnly": True},
        {"name": "safety-secrets", "mountPath": SAFETY_SECRETS_DIR, "readOnly": True},
    ]
    return args, volumes, mounts


def deployment(
    md: ModelDeployment, workload: Workload, otlp_endpoint: str | None = None, scaled_externally: bool = False
) -> dict[str, Any]:
    """The Deployment running one revision's serving pods; they trace requests and export the
    spans to ``otlp_endpoint`` when the operator is given one (an operator setting, the same for
    every ModelDeployment: ``cutover operator --serving-otlp-endpoint``). ``scaled_externally``:
    another scaler (an HPA, KEDA) owns its replicas, so the field is left out and server-side
    apply releases the operator's ownership of it."""
    model, runtime = workload.source.model, workload.source.runtime
    name = child_name(md, workload.revision)
    pod_labels = {
        **serving_pods(md),
        LABEL_REVISION: workload.revision,
        "app.kubernetes.io/instance": md.metadata.name or "",
    }
    model_path, volumes, mounts, init = _storage(model)
    args = [
        "serve",
        "--name",
        model["name"],
        "--version",
        model["version"],
        "--format",
        model["format"],
        "--revision",
        workload.revision,
        "--namespace",
        md.metadata.namespace or "",
        "--port",
        str(PORT),
        "--grpc-port",
        str(GRPC_PORT),
    ]
    if model_path:
        args += ["--model-uri", model_path]
    if model.get("checksum"):
        args += ["--checksum", model["checksum"]]
    if model.get("upstream"):
        args += ["--upstream", model["upstream"]["url"], "--upstream-model", model["upstream"]["model"]]
    batching = runtime.get("batching")
    if batching:
        args += [
            "--max-batch-size",
            str(batching["maxBatchSize"]),
            "--max-queue-delay",
            batching["maxQueueDelay"],
            "--max-queue-size",
            str(batching["maxQueueSize"]),
        ]
    cache = runtime.get("cache")
    if cache is not None:
        args += [
            "--prediction-cache-entries",
            str(cache["maxEntries"]),
            "--prediction-cache-bytes",
            str(cache["maxBytes"]),
        ]
        if cache.get("ttl"):
            args += ["--prediction-cache-ttl", cache["ttl"]]
    explain = runtime.get("explain")
    if explain is not None:
        args += [
            "--explain-max-in-flight",
            str(explain["maxInFlight"] if explain["enabled"] else 0),
            "--explain-timeout",
            f"{seconds(explain['timeout']):g}",
            "--explain-background",
            str(explain["background"]),
        ]
        if explain.get("sampleRate") is not None:
            args += ["--explain-sample-rate", f"{explain['sampleRate']:g}"]
    for flag, key in (("--inputs", "inputs"), ("--outputs", "outputs"), ("--ood", "outOfDistribution")):
        if model.get(key):
            args += [flag, _canonical_json(model[key])]
    fallback = md.spec.fallback
    if fallback is not None:
        # Canonical JSON of the parsed values (safeDefault is free-form: its key order and number
        # spelling are whatever the writer chose), so the template depends on the values only.
        args += ["--fallback", _canonical_json(fallback.wire())]
        if fallback.previous_version:
            # The previous version is whatever is stable now, reached through a Service whose
            # selector follows the stable revision, so a promotion changes no pod template; a
            # stable pod that reaches itself skips the link.
            args += ["--previous-url", f"http://{stable_service_name(md)}:{PORT}"]
    safety_args, safety_volumes, safety_mounts = _safety_policy(md)
    args += [*safety_args, "--shutdown-delay", str(SHUTDOWN_DELAY_SECONDS)]
    if otlp_endpoint:
        args += ["--otlp-endpoint", otlp_endpoint]
    env = [{"name": e["name"], "value": e.get("value", "")} for e in runtime.get("env", [])]
    upstream_key = (model.get("upstream") or {}).get("apiKeySecretRef")
    if upstream_key:
        env.append({"name": "CUTOVER_UPSTREAM_API_KEY", "valueFrom": {"secretKeyRef": upstream_key}})
    resources: dict[str, Any] = {k: dict(v) for k, v in (runtime.get("resources") or {}).items() if v}
    tolerations = list(runtime.get("tolerations", []))
    node_selector = dict(runtime.get("nodeSelector", {}))
    affinity = dict(runtime.get("affinity", {}))
    wanted = gpu.resource(runtime.get("gpu"))
    if wanted:
        resource, count = wanted
        resources.setdefault("limits", {})[resource] = count
        resources.setdefault("requests", {})[resource] = count
        if not any(t.get("key") == GPU_TAINT_KEY for t in tolerations):
            tolerations.append({"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
        spec_gpu = runtime["gpu"]
        if spec_gpu.get("product"):
            node_selector[gpu.PRODUCT_LABEL] = spec_gpu["product"]
        required_labels: list[dict[str, Any]] = []
        if spec_gpu.get("minMemoryMiB"):
            required_labels.append(
                {"key": gpu.MEMORY_LABEL, "operator": "Gt", "values": [str(spec_gpu["minMemoryMiB"] - 1)]}
            )
        sharing = gpu.SHARING_STRATEGIES.get(spec_gpu.get("sharing", "none"))
        if sharing:
            # Land only where the device plugin shares GPUs the way the spec asks.
            required_labels.append({"key": gpu.SHARING_LABEL, "operator": "In", "values": [sharing]})
        if required_labels:
            # Required node affinity: every term (they are ORed) must carry the GPU requirements.
            affinity = copy.deepcopy(affinity)
            required = affinity.setdefault("nodeAffinity", {}).setdefault(
                "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": [{"matchExpressions": []}]}
            )
            for selector_term in required["nodeSelectorTerms"]:
                selector_term.setdefault("matchExpressions", []).extend(required_labels)
    probe_path = {"readiness": "/v2/health/ready", "liveness": "/v2/health/live"}
    container: dict[str, Any] = {
        "name": "serve",
        "image": runtime.get("image", "ghcr.io/cutover/serving:0.1.0"),
        "args": args,
        "ports": [
            {"name": "http", "containerPort": PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "resources": resources,
        "readinessProbe": {
            "httpGet": {"path": probe_path["readiness"], "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        },
        "livenessProbe": {
            "httpGet": {"path": probe_path["liveness"], "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": 6,
        },
        "startupProbe": {
            "httpGet": {"path": probe_path["readiness"], "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": 120,
        },
        "securityContext": _security_context(),
        "volumeMounts": [*mounts, *safety_mounts, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 45,
        "volumes": [*volumes, *safety_volumes, {"name": "tmp", "emptyDir": {}}],
    }
    if init:
        pod_spec["initContainers"] = init
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if affinity:
        pod_spec["affinity"] = affinity
    labels = {**pod_labels, LABEL_ROLE: workload.role, LABEL_MANAGED_BY: MANAGER}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(md, name, labels),
        "spec": {
            **({} if scaled_externally else {"replicas": workload.replicas}),
            "selector": {"matchLabels": {LABEL_MODEL: md.metadata.name, LABEL_REVISION: workload.revision}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def service(md: ModelDeployment, workload: Workload) -> dict[str, Any]:
    """A Service for one revision's pods: what the gateway and HTTPRoutes send traffic to."""
    labels = {
        LABEL_MODEL: md.metadata.name or "",
        LABEL_REVISION: workload.revision,
        LABEL_ROLE: workload.role,
        LABEL_MANAGED_BY: MANAGER,
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, child_name(md, workload.revision), labels),
        "spec": {
            "selector": {LABEL_MODEL: md.metadata.name, LABEL_REVISION: workload.revision},
            "ports": _service_ports(),
        },
    }


def _service_ports() -> list[dict[str, Any]]:
    """A serving Service's ports: HTTP, and the Open Inference Protocol's gRPC (``grpc``)."""
    return [
        {"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
    ]


def stable_service_name(md: ModelDeployment) -> str:
    return f"{md.metadata.name}-stable"


def stable_service(md: ModelDeployment, stable_revision: str) -> dict[str, Any]:
    """The stable revision under a fixed name: the first link of every revision's fallback chain.

    Headless (``clusterIP: None``): its only client is the fallback link inside the model's own
    pods, whose HTTP client resolves the name to the stable pods' addresses and spreads its
    connections over them, so it needs no virtual IP. Each cluster IP is an allocation the API
    server makes one at a time (about 30 a second on an idle two-core control plane, half that
    under load: ``benchmarks/README.md``), and this Service would double them for every
    ModelDeployment with a fallback. The port is the container's, as a headless Service's
    clients connect to the pods directly."""
    labels = {LABEL_MODEL: md.metadata.name or "", LABEL_ROLE: "stable", LABEL_MANAGED_BY: MANAGER}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, stable_service_name(md), labels),
        "spec": {
            "clusterIP": "None",
            "selector": {LABEL_MODEL: md.metadata.name, LABEL_REVISION: stable_revision},
            "ports": _service_ports(),
        },
    }


def shared_service(md: ModelDeployment, traffic: list[TrafficEntry]) -> dict[str, Any]:
    """For provider replicas: one Service named after the ModelDeployment. A canary's selects
    every pod of the model, so the replica ratio is the traffic split (the state machine keeps
    no other pods then); blue/green's selects the one revision the traffic table sends all live
    traffic to, so neither the preview nor the old stable's kept pods take any."""
    labels = {LABEL_MODEL: md.metadata.name or "", LABEL_MANAGED_BY: MANAGER}
    selector = {LABEL_MODEL: md.metadata.name}
    live = max(traffic, key=lambda row: (row.weight, row.role == "stable"), default=None)
    if md.spec.strategy.type != "canary" and live is not None:
        selector[LABEL_REVISION] = live.revision
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, md.metadata.name or "", labels),
        "spec": {
            "selector": selector,
            "ports": _service_ports(),
        },
    }


def disruption_budget(md: ModelDeployment, workload: Workload) -> dict[str, Any] | None:
    """At most one pod of a revision voluntarily disrupted at a time (when it has several)."""
    if workload.replicas < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
            md,
            child_name(md, workload.revision),
            {LABEL_MODEL: md.metadata.name or "", LABEL_REVISION: workload.revision},
        ),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {LABEL_MODEL: md.metadata.name, LABEL_REVISION: workload.revision}},
        },
    }


def network_policy(md: ModelDeployment, ingress: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The NetworkPolicy (networking.k8s.io/v1) over all serving pods of ``md``: they accept
    connections from the sources of ``ingress`` (NetworkPolicyIngressRule objects, as the chart
    renders them: the gateway, Prometheus, and any the user adds) and nothing else; with
    ``fallback.previousVersion`` also from the model's own serving pods, whose fallback calls the
    stable revision. Egress is left open (model storage and LLM upstreams may be anywhere)."""
    pods = serving_pods(md)
    rules = [dict(rule) for rule in ingress]
    if md.spec.fallback is not None and md.spec.fallback.previous_version:
        rules.append({"from": [{"podSelector": {"matchLabels": pods}}], "ports": [{"port": "http", "protocol": "TCP"}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(
            md, md.metadata.name or "", {LABEL_MODEL: md.metadata.name or "", LABEL_MANAGED_BY: MANAGER}
        ),
        "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress"], "ingress": rules},
    }


def http_route(md: ModelDeployment, traffic: list[TrafficEntry]) -> dict[str, Any] | None:
    """The weighted HTTPRoute for provider gatewayAPI: backends by weight, a RequestMirror
    filter for shadow, and session persistence for A/B assignment by header or cookie."""
    api = md.spec.traffic.gateway_api
    if api is None or not traffic:
        return None
    backends = [
        {"name": row.service or child_name(md, row.revision), "port": PORT, "weight": row.weight}
        for row in traffic
        if row.weight > 0
    ]
    rule: dict[str, Any] = {"backendRefs": backends}
    mirrored = [row for row in traffic if row.mirror_percent > 0]
    if mirrored:
        row = mirrored[0]
        rule["filters"] = [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"name": row.service or child_name(md, row.revision), "port": PORT},
                    "percent": row.mirror_percent,
                },
            }
        ]
    ab = md.spec.strategy.ab_test
    if ab is not None and md.spec.strategy.type == "abTest":
        kind = "Cookie" if ab.assignment.by == "cookie" else "Header"
        rule["sessionPersistence"] = {"sessionName": ab.assignment.name, "type": kind}
    parents = [
        {k: v for k, v in {"name": p.name, "namespace": p.namespace, "sectionName": p.section_name}.items() if v}
        for p in api.parent_refs
    ]
    spec: dict[str, Any] = {"parentRefs": parents, "rules": [rule]}
    if api.hostnames:
        spec["hostnames"] = list(api.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _metadata(
            md, md.metadata.name or "", {LABEL_MODEL: md.metadata.name or "", LABEL_MANAGED_BY: MANAGER}
        ),
        "spec": spec,
    }


def children(
    md: ModelDeployment,
    workloads: tuple[Workload, ...],
    traffic: list[TrafficEntry],
    otlp_endpoint: str | None = None,
    scaled_externally: Collection[str] = (),
    serving_ingress: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every child a plan asks for (``otlp_endpoint``: as :func:`deployment` takes it;
    ``scaled_externally``: names of the Deployments whose replicas another scaler owns;
    ``serving_ingress``: as :func:`network_policy` takes it, None for no NetworkPolicy)."""
    out: list[dict[str, Any]] = []
    for workload in workloads:
        external = child_name(md, workload.revision) in scaled_externally
        out.append(deployment(md, workload, otlp_endpoint, external))
        out.append(service(md, workload))
        budget = disruption_budget(md, workload)
        if budget:
            out.append(budget)
    if md.spec.traffic.provider == "replicas":
        out.append(shared_service(md, traffic))
    stable = next((w for w in workloads if w.role == "stable"), None)
    if md.spec.fallback is not None and md.spec.fallback.previous_version and stable is not None:
        out.append(stable_service(md, stable.revision))
    route = http_route(md, traffic) if md.spec.traffic.provider == "gatewayAPI" else None
    if route:
        out.append(route)
    if serving_ingress is not None:
        out.append(network_policy(md, serving_ingress))
    return out
