"""ModelDeployment (``md``): one model behind one endpoint, rolled out safely.

Field names follow Argo Rollouts and Flagger where the meaning is the same (``steps``,
``setWeight``, ``pause``, ``interval``, ``thresholdRange``, ``progressDeadlineSeconds``,
``revisionHistoryLimit``, ``autoPromotionEnabled``, ``scaleDownDelaySeconds``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from ..contract import LATENCY_THRESHOLDS, duration_text
from .base import (
    ApiModel,
    Conditions,
    DNSLabel,
    Duration,
    LocalObjectRef,
    ObjectMeta,
    Quantity,
    Rule,
    SecretKeyRef,
    exactly_one,
    not_above,
    one_of,
    seconds,
)

ModelFormat = Literal["onnx", "pytorch", "tensorflow", "triton", "llm"]
TensorDatatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]
StorageUri = Annotated[
    str,
    StringConstraints(pattern=r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|https?://.+|s3://[^/]+/.*|file:///.+)$"),
]
Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)]
Percent = Annotated[int, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(ge=0, le=1)]

# --------------------------------------------------------------------------- model


class ValueRange(ApiModel):
    """Inclusive bounds every element of a tensor must lie in."""

    min: float | None = None
    """Smallest allowed value."""
    max: float | None = None
    """Largest allowed value."""

    rules = (not_above("min", "max", "range.min must not exceed range.max"),)


class TensorSpec(ApiModel):
    """Name, type and shape of one model input or output (Open Inference Protocol terms)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """Tensor name as the model declares it."""
    datatype: TensorDatatype
    """Open Inference Protocol datatype, such as FP32 or INT64."""
    shape: Annotated[list[Annotated[int, Field(ge=-1)]], Field(min_length=0, max_length=8)]
    """Dimensions; -1 marks a variable dimension (usually the batch)."""
    range: ValueRange | None = None
    """Bounds for every element; requests outside them are rejected with 400."""
    label_filename: Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^\S+$")] | None = None
    """Outputs only: a text file with one class label per line (line i names class i), as
    Triton's ``label_filename``: a path relative to the model file's folder (inside a SavedModel
    directory), or absolute. The classification extension (``parameters.classification`` on a
    requested output) answers "value:index:label" with it, "value:index" without."""


OutOfDistributionMethod = Literal["mahalanobis", "isolationForest", "autoencoder"]


class OutOfDistribution(ApiModel):
    """Out-of-distribution scoring against the training data: Mahalanobis distance from the
    training statistics, or an extra ONNX model (isolation forest, autoencoder) beside the model."""

    statistics_uri: Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^\S+$")]
    """Training statistics (feature means and covariance, as JSON): a URI, or a path relative
    to the model's storageUri."""
    input: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """The input tensor whose rows are scored."""
    threshold: Annotated[float, Field(gt=0)] | None = None
    """Score above which a prediction counts as out of distribution, in the method's unit:
    Mahalanobis distance; isolation forest anomaly score (0.5 is the forest's own boundary, 1 the
    most isolated); autoencoder mean squared reconstruction error per feature. Unset: the
    statistics file's ``thresholds`` entry for the method (set when the scorer was fitted, e.g.
    the 99th percentile of the training rows' scores), so it travels with the model."""
    method: OutOfDistributionMethod | None = None
    """How rows are scored: mahalanobis (from statisticsUri; unset means this), isolationForest
    (an sklearn IsolationForest converted by skl2onnx) or autoencoder (a model reconstructing its
    input), the last two an ONNX file at modelUri run in the serving pod's onnxruntime. No
    default is written into the object: a revision is the hash of its model section, so a
    default would give every model written before this field a new revision, and a rollout of
    what already runs, on the operator's upgrade."""
    model_uri: Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^\S+$")] | None = None
    """The scorer's ONNX file for isolationForest and autoencoder: a path relative to the
    model's storageUri (shipped beside it), an absolute path or file://."""

    @property
    def scorer(self) -> OutOfDistributionMethod:
        """The method in effect: ``method``, or mahalanobis when it is unset."""
        return self.method or "mahalanobis"

    rules = (
        Rule(
            cel="(!has(self.method) || self.method == 'mahalanobis') == !has(self.modelUri)",
            message="outOfDistribution.modelUri (the scorer's ONNX file) is required for methods isolationForest "
            "and autoencoder, and not allowed for mahalanobis",
            check=lambda s: (s.scorer == "mahalanobis") == (s.model_uri is None),
        ),
        Rule(
            cel="!has(self.modelUri) || !self.modelUri.contains('://') || self.modelUri.startsWith('file://')",
            message="outOfDistribution.modelUri is a file in the serving pod: a path beside the model, an absolute "
            "path or file://",
            check=lambda s: s.model_uri is None or "://" not in s.model_uri or s.model_uri.startswith("file://"),
        ),
    )


class Upstream(ApiModel):
    """A remote model server that serves the model (format triton or llm)."""

    url: Url
    """Base URL of the Triton HTTP endpoint or the OpenAI-compatible API."""
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Model name at the upstream."""
    api_key_secret_ref: SecretKeyRef | None = None
    """Secret key holding the upstream API key, sent as a bearer token."""
    timeout_seconds: Annotated[int, Field(ge=1, le=600)] = 30
    """Timeout of one upstream request."""


class ModelSpec(ApiModel):
    """What is served: the model artifact and its contract."""

    name: DNSLabel
    """Model name, the {name} in /v2/models/{name}/infer. Cannot change after creation."""
    version: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")]
    """Version label of this model build, such as 2024-05-01 or v3. Part of the revision hash."""
    format: ModelFormat
    """onnx, pytorch and tensorflow (a SavedModel directory, served through its serving_default
    signature) load storageUri into the serving pod; triton and llm forward to upstream."""
    storage_uri: StorageUri | None = None
    """Where the artifact lives: pvc://claim/path, https://… (with checksum), s3://bucket/key
    (fetched by an init container) or file:///path on the node."""
    checksum: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None
    """sha256:<hex> of the artifact; required for http(s) URIs so a changed file is never served."""
    upstream: Upstream | None = None
    """The remote server for triton and llm formats."""
    inputs: Annotated[list[TensorSpec], Field(max_length=64)] = []
    """Declared inputs; requests that do not match are rejected with 400."""
    outputs: Annotated[list[TensorSpec], Field(max_length=64)] = []
    """Declared outputs."""
    out_of_distribution: OutOfDistribution | None = None
    """Out-of-distribution scoring, exported per prediction."""

    rules = (
        Rule(
            cel="(self.format in ['onnx', 'pytorch', 'tensorflow']) == has(self.storageUri)",
            message="storageUri is required for formats onnx, pytorch and tensorflow, and not allowed for triton "
            "and llm (they use upstream)",
            check=lambda s: (s.format in ("onnx", "pytorch", "tensorflow")) == (s.storage_uri is not None),
        ),
        Rule(
            cel="(self.format in ['triton', 'llm']) == has(self.upstream)",
            message="upstream is required for formats triton and llm, and not allowed for onnx, pytorch and tensorflow",
            check=lambda s: (s.format in ("triton", "llm")) == (s.upstream is not None),
        ),
        Rule(
            cel="self.format != 'tensorflow' || (!has(self.checksum) && !(has(self.storageUri) && "
            "self.storageUri.startsWith('http')))",
            message="format tensorflow serves a SavedModel directory, which has no single checksum and cannot be "
            "downloaded over http(s): use a pvc://, s3:// or file:// storageUri without checksum",
            check=lambda s: (
                s.format != "tensorflow" or (s.checksum is None and not (s.storage_uri or "").startswith("http"))
            ),
        ),
        Rule(
            cel="!has(self.storageUri) || !self.storageUri.startsWith('http') || has(self.checksum)",
            message="an http(s) storageUri needs a checksum (sha256:<hex>) so a changed file is never served",
            check=lambda s: not (s.storage_uri or "").startswith("http") or s.checksum is not None,
        ),
        Rule(
            cel="!has(self.outOfDistribution) || self.inputs.exists(i, i.name == self.outOfDistribution.input)",
            message="outOfDistribution.input must name one of model.inputs",
            check=lambda s: (
                s.out_of_distribution is None or any(i.name == s.out_of_distribution.input for i in s.inputs)
            ),
        ),
    )


# --------------------------------------------------------------------------- runtime


class ResourceRequirements(ApiModel):
    """CPU and memory for each serving container (GPUs are set in runtime.gpu)."""

    requests: dict[str, Quantity] = {}
    """Minimum resources, such as cpu: 500m, memory: 1Gi."""
    limits: dict[str, Quantity] = {}
    """Maximum resources."""


class GpuSpec(ApiModel):
    """GPUs for each serving pod, scheduled through the NVIDIA device plugin resources."""

    count: Annotated[int, Field(ge=0, le=16)] = 1
    """GPUs (or MIG slices, with migProfile) per pod."""
    product: Annotated[str, StringConstraints(max_length=128)] | None = None
    """Required nvidia.com/gpu.product node label, such as NVIDIA-A100-SXM4-80GB."""
    min_memory_mib: int | None = Field(default=None, ge=1, alias="minMemoryMiB")
    """Minimum nvidia.com/gpu.memory (MiB) of the node's GPUs."""
    mig_profile: Annotated[str, StringConstraints(pattern=r"^[0-9]+g\.[0-9]+gb$")] | None = None
    """Request a MIG slice (resource nvidia.com/mig-<profile>) instead of whole GPUs, e.g. 1g.10gb."""
    sharing: Literal["none", "timeSlicing", "mps"] = "none"
    """Whether pods share a GPU by time slicing or MPS (the node must be set up for it)."""

    rules = (
        Rule(
            cel="!has(self.migProfile) || self.count >= 1",
            message="a MIG profile requires a GPU: set gpu.count to at least 1",
            check=lambda s: s.mig_profile is None or s.count >= 1,
        ),
        Rule(
            cel="self.sharing == 'none' || self.count >= 1",
            message="GPU sharing requires a GPU: set gpu.count to at least 1",
            check=lambda s: s.sharing == "none" or s.count >= 1,
        ),
    )


class Toleration(ApiModel):
    """A pod toleration (core/v1 Toleration)."""

    key: str | None = None
    """Taint key; empty with operator Exists matches every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists or Equal."""
    value: str | None = None
    """Taint value for Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all."""
    toleration_seconds: int | None = None
    """How long a NoExecute taint is tolerated."""

    rules = (
        Rule(
            cel="self.operator != 'Exists' || !has(self.value)",
            message="a toleration with operator Exists must not set value",
            check=lambda s: s.operator != "Exists" or s.value is None,
        ),
    )


class Batching(ApiModel):
    """Dynamic batching in the serving runtime."""

    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    """Most requests merged into one model call."""
    max_queue_delay: Duration = "2ms"
    """Longest a request waits for others to join its batch."""
    max_queue_size: Annotated[int, Field(ge=1, le=100000)] = 256
    """Queued requests beyond which new ones are shed with 503 and Retry-After."""


class PredictionCache(ApiModel):
    """Answer identical inference requests from memory instead of the model, in each serving
    pod. Only for a model that gives the same outputs for the same inputs every time (no
    sampling, no state); refused for format llm. A cached answer still passes the fallback
    chain and the SafetyPolicy's output filters."""

    max_entries: Annotated[int, Field(ge=1, le=1000000)] = 10000
    """Most answers kept; the least recently used one goes first."""
    max_bytes: Annotated[int, Field(ge=1024, le=68719476736)] = 67108864
    """Most bytes of cached outputs (64 MiB by default, at most 64 GiB); they count against the
    container's memory, so leave room for them in runtime.resources."""
    ttl: Duration | None = None
    """How long an answer may be served from the cache; unset keeps it until it is evicted."""

    rules = (
        Rule(
            cel="!has(self.ttl) || duration(self.ttl) > duration('0s')",
            message="cache.ttl must be longer than 0s; remove it to keep answers until they are evicted",
            check=lambda s: s.ttl is None or seconds(s.ttl) > 0,
        ),
    )


class Explanations(ApiModel):
    """The serving pods' explain endpoint (``POST /v2/models/{name}/explain``): per-feature
    attributions, nearest training examples and counterfactuals, computed in each pod off the
    inference path (their own threads, never the batcher) and never counted as predictions.
    Neighbours, counterfactuals and background rows come from the ``exemplars`` of
    ``model.outOfDistribution.statisticsUri``."""

    enabled: bool = True
    """Whether the endpoint answers; off, it answers 501."""
    max_in_flight: Annotated[int, Field(ge=1, le=64)] = 1
    """Explanations computed at once per pod, each on a thread of its own; one more is refused
    with 503 and Retry-After. Each takes a CPU core while it runs: leave room in runtime.resources."""
    timeout: Duration = "2s"
    """Longest an explanation may take; one that needs longer is refused with 422."""
    background: Annotated[int, Field(ge=1, le=1000)] = 50
    """Background rows sampled from the exemplars for each explanation (the model evaluates
    this many rows per coalition or feature order: more is steadier and slower)."""
    sample_rate: Annotated[float, Field(gt=0, le=1)] | None = None
    """Fraction of the rows each pod answers that it explains in the background, counting each
    row's most attributed feature per revision (``cutover_attribution_top_feature_total``), the
    data of the attribution shift comparison; unset: none. Rows are dropped (and counted) when
    the pod cannot keep up, never delaying inference. The explained input needs 1 to 32 features."""

    rules = (
        Rule(
            cel="duration(self.timeout) > duration('0s') && duration(self.timeout) <= duration('5m')",
            message="explain.timeout must be longer than 0s and at most 5m",
            check=lambda s: 0 < seconds(s.timeout) <= 300,
        ),
        Rule(
            cel="!has(self.sampleRate) || self.enabled",
            message="explain.sampleRate needs explain.enabled: sampled rows are explained by the explain endpoint's "
            "machinery",
            check=lambda s: s.sample_rate is None or s.enabled,
        ),
    )


class Autoscaling(ApiModel):
    """Horizontal autoscaling of the model's pods by the operator, with the Kubernetes
    HorizontalPodAutoscaler's algorithm (tolerance, stabilisation windows, default scaling
    policies) on metrics read from Prometheus. With both targets set the larger count wins (as
    an HPA with several metrics); with neither, the model runs minReplicas pods."""

    min_replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Fewest pods."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    """Most pods."""
    target_in_flight: Annotated[int, Field(ge=1)] | None = None
    """Target concurrent requests per pod (cutover_serving_in_flight, averaged over the pods)."""
    target_gpu_utilization: Annotated[int, Field(ge=1, le=100)] | None = None
    """Target GPU utilisation percent per pod (DCGM exporter's DCGM_FI_DEV_GPU_UTIL)."""
    scale_up_stabilization: Duration | None = None
    """The HPA's behavior.scaleUp.stabilizationWindowSeconds: scale up to the lowest count
    recommended within this window (0s when unset)."""
    scale_down_stabilization: Duration | None = None
    """The HPA's behavior.scaleDown.stabilizationWindowSeconds: scale down to the highest count
    recommended within this window (300s when unset)."""

    rules = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            check=lambda s: s.min_replicas <= s.max_replicas,
        ),
        Rule(
            cel="!has(self.scaleDownStabilization) || duration(self.scaleDownStabilization) <= duration('3600s')",
            message="autoscaling.scaleDownStabilization must be at most 1h (the HPA's limit)",
            check=lambda s: s.scale_down_stabilization is None or seconds(s.scale_down_stabilization) <= 3600,
        ),
        Rule(
            cel="!has(self.scaleUpStabilization) || duration(self.scaleUpStabilization) <= duration('3600s')",
            message="autoscaling.scaleUpStabilization must be at most 1h (the HPA's limit)",
            check=lambda s: s.scale_up_stabilization is None or seconds(s.scale_up_stabilization) <= 3600,
        ),
    )


class EnvVar(ApiModel):
    """An environment variable for the serving container."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """Variable name."""
    value: str = ""
    """Variable value."""


class RuntimeSpec(ApiModel):
    """How the model is run: image, replicas, resources, GPUs, placement, batching, scaling."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] = "ghcr.io/cutover/serving:0.1.0"
    """Serving image; the default runs `cutover serve`."""
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Pods of the stable revision (ignored when autoscaling is set)."""
    resources: ResourceRequirements | None = None
    """CPU and memory requests and limits."""
    gpu: GpuSpec | None = None
    """GPUs per pod; leave unset for CPU serving."""
    node_selector: dict[str, str] = {}
    """Node labels the pods must match."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    """Taints the pods tolerate (the nvidia.com/gpu taint is tolerated automatically with gpu)."""
    affinity: Annotated[
        dict[str, Any],
        Field(json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = {}
    """Pod affinity and anti-affinity (core/v1 Affinity), passed through unchanged."""
    batching: Batching | None = None
    """Dynamic batching; unset serves each request alone."""
    cache: PredictionCache | None = None
    """Prediction cache for identical inference requests; unset asks the model every time."""
    explain: Explanations | None = None
    """The explain endpoint's limits; unset keeps its defaults (on, one at a time, 2s, 50 rows)."""
    autoscaling: Autoscaling | None = None
    """Horizontal autoscaling; unset keeps replicas fixed."""
    env: Annotated[list[EnvVar], Field(max_length=64)] = []
    """Extra environment for the serving container."""


# --------------------------------------------------------------------------- strategy


class Pause(ApiModel):
    """Wait before the next step: for a duration, or until on-call promotes."""

    duration: Duration | None = None
    """How long to wait; unset waits for `kubectl cutover promote` (or the promote annotation)."""


class StepAnalysis(ApiModel):
    """Hold the step until the sequential test reaches a verdict."""

    min_samples: Annotated[int, Field(ge=1)] | None = None
    """Requests per arm needed before this step may promote (defaults to analysis.minSamples)."""
    max_duration: Duration | None = None
    """How long the step may stay inconclusive before the rollout counts as not progressing."""


class CanaryStep(ApiModel):
    """One canary step: exactly one of setWeight, pause or analysis."""

    set_weight: Percent | None = None
    """Percent of live traffic sent to the candidate from this step on."""
    pause: Pause | None = None
    """Wait for a duration or for a human."""
    analysis: StepAnalysis | None = None
    """Wait for a promote verdict from the sequential test before going on."""

    rules = (
        Rule(
            cel="[has(self.setWeight), has(self.pause), has(self.analysis)].filter(x, x).size() == 1",
            message="each canary step sets exactly one of setWeight, pause or analysis",
            check=lambda s: exactly_one(s.set_weight is not None, s.pause is not None, s.analysis is not None),
        ),
    )


def _weights(steps: list[CanaryStep]) -> list[int]:
    return [s.set_weight for s in steps if s.set_weight is not None]


class CanaryStrategy(ApiModel):
    """Shift live traffic to the candidate step by step, analysing at every step."""

    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=32)]
    """The steps in order; after the last one the candidate is promoted to 100%."""
    baseline: bool = False
    """Start fresh pods of the stable revision taking the same traffic as the candidate, and
    compare against them instead of the long-running stable pods (no warm-cache bias)."""

    rules = (
        Rule(
            cel="self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
            message="canary setWeight values must not decrease from one step to the next",
            check=lambda s: _weights(s.steps) == sorted(_weights(s.steps)),
        ),
        Rule(
            cel="!self.baseline || self.steps.all(s, !has(s.setWeight) || s.setWeight <= 50)",
            message="with baseline pods the candidate and the baseline take equal shares, so setWeight "
            "may be at most 50",
            check=lambda s: not s.baseline or all(w <= 50 for w in _weights(s.steps)),
        ),
    )


class BlueGreenStrategy(ApiModel):
    """Bring the candidate up at full size as a preview with no live traffic, then switch."""

    preview_replica_count: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Preview pods; defaults to runtime.replicas."""
    auto_promotion_enabled: bool = True
    """Switch automatically once analysis passes (and autoPromotionSeconds has elapsed)."""
    auto_promotion_seconds: Annotated[int, Field(ge=0, le=86400)] | None = None
    """Least time the preview runs before an automatic switch."""
    scale_down_delay_seconds: Annotated[int, Field(ge=0, le=86400)] = 30
    """How long the old revision keeps its pods after the switch, for instant rollback."""

    rules = (
        Rule(
            cel="self.autoPromotionEnabled || !has(self.autoPromotionSeconds)",
            message="autoPromotionSeconds has no effect when autoPromotionEnabled is false; remove one of them",
            check=lambda s: s.auto_promotion_enabled or s.auto_promotion_seconds is None,
        ),
    )


class ShadowStrategy(ApiModel):
    """Mirror a share of live traffic to the candidate, whose answers never reach clients."""

    mirror_percent: Annotated[int, Field(ge=1, le=100)] = 100
    """Percent of requests copied to the candidate."""
    min_agreement: Fraction = 0.95
    """Least fraction of mirrored requests on which candidate and stable agree."""
    agreement: Literal["top1", "numeric"] = "top1"
    """How the gateway decides that the candidate's answer agrees with stable's. Inference:
    top1 compares each row's class (arg-max over the last axis; labels must be equal), numeric
    needs every element of every output within tolerance. LLM chat (answers are sampled, so
    never compared as exact text): top1 compares the answer's first word (its label, such as
    yes/no), numeric needs the answers' word overlap (1 - F1 of their words) within tolerance."""
    tolerance: Annotated[float, Field(ge=0)] = 1e-3
    """For numeric (and one-column scores under top1): the largest absolute difference that
    still agrees. For LLM chat with numeric: the share of words that may differ, 0 to 1 (0.5
    suits free-form answers)."""
    duration: Duration = "10m"
    """Least time to shadow before promotion."""


class StickyAssignment(ApiModel):
    """How a client is pinned to one arm of an A/B test."""

    by: Literal["header", "cookie", "hashKey"]
    """header: the value of a request header; cookie: a cookie the gateway sets; hashKey: a hash of
    a request header such as a user id."""
    name: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_]*$")]
    """Header or cookie name."""


class AbTestStrategy(ApiModel):
    """Split live traffic between stable (A) and candidate (B); the winner is promoted."""

    assignment: StickyAssignment
    """How clients are pinned to an arm."""
    candidate_weight: Annotated[int, Field(ge=1, le=99)] = 50
    """Percent of clients assigned to the candidate."""
    duration: Duration = "24h"
    """Longest the test runs; it ends earlier when the sequential test decides."""
    metric: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    """The analysis metric that decides the winner."""


class StrategySpec(ApiModel):
    """How a new revision replaces the stable one."""

    type: Literal["canary", "blueGreen", "shadow", "abTest"]
    """Which strategy; exactly the block of the same name must be set."""
    canary: CanaryStrategy | None = None
    """Settings for type canary."""
    blue_green: BlueGreenStrategy | None = None
    """Settings for type blueGreen."""
    shadow: ShadowStrategy | None = None
    """Settings for type shadow."""
    ab_test: AbTestStrategy | None = None
    """Settings for type abTest."""
    surge: Literal["auto", "always", "never"] = "auto"
    """always runs candidate pods beside the stable ones; never swaps stable replicas for candidate
    replicas (no extra GPUs); auto swaps only when the GPU capacity preflight finds too few GPUs."""

    rules = tuple(
        Rule(
            cel=f"has(self.{block}) == (self.type == '{block}')",
            message=f"strategy.{block} must be set exactly when strategy.type is {block}",
            check=lambda s, attr=attr, block=block: (getattr(s, attr) is not None) == (s.type == block),
            field_path=f".{block}",
        )
        for block, attr in (
            ("canary", "canary"),
            ("blueGreen", "blue_green"),
            ("shadow", "shadow"),
            ("abTest", "ab_test"),
        )
    )


# --------------------------------------------------------------------------- analysis

BuiltinMetric = Literal[
    "errorRate",
    "latency",
    "predictionConfidence",
    "outOfDistributionRate",
    "safetyViolations",
    "accuracy",
    "calibrationError",
    "inputDrift",
    "attributionShift",
]


def _limited(builtin: str, limit: str) -> Rule:
    """The rule that builtin metric ``builtin``, judged against a limit rather than against the
    baseline, sets ``thresholdRange.max`` (``limit`` says what it bounds, with an example)."""
    return Rule(
        cel=f"!has(self.builtin) || self.builtin != '{builtin}' || "
        "(has(self.thresholdRange) && has(self.thresholdRange.max))",
        message=f"builtin {builtin} is judged against a limit: set thresholdRange.max ({limit})",
        check=lambda s: s.builtin != builtin or (s.threshold_range is not None and s.threshold_range.max is not None),
    )


FEEDBACK_METRICS = ("accuracy", "calibrationError")
"""Builtin metrics read from ground-truth feedback: they need ``spec.feedback``."""


class ThresholdRange(ApiModel):
    """Absolute bounds the candidate's estimate must stay within (as in Flagger)."""

    min: float | None = None
    """Lowest acceptable value."""
    max: float | None = None
    """Highest acceptable value."""

    rules = (
        Rule(
            cel="has(self.min) || has(self.max)",
            message="thresholdRange needs min, max or both",
            check=lambda s: s.min is not None or s.max is not None,
        ),
        not_above("min", "max", "thresholdRange.min must not exceed thresholdRange.max"),
    )


class PrometheusQuery(ApiModel):
    """A custom count metric: PromQL templates returning the events and the trials of one
    revision over one interval. Variables: {{model}}, {{namespace}}, {{revision}}, {{interval}}."""

    events: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    """Counts the bad (or, with direction decrease, the good) events, e.g. timed-out requests."""
    total: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    """Counts the trials the events are out of, e.g. all requests."""


class MetricSpec(ApiModel):
    """One metric compared between candidate and stable (or baseline)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z][-a-z0-9]*$")]
    """Name shown in status and events."""
    builtin: BuiltinMetric | None = None
    """A metric cutover knows how to query from serving and gateway metrics."""
    prometheus: PrometheusQuery | None = None
    """A custom count metric from PromQL templates."""
    latency_threshold: Duration | None = None
    """For builtin latency: requests slower than this count as events. It must be one of the
    latency histograms' bucket edges (1ms to 30s; an invalid value is refused with the list)."""
    direction: Literal["increase", "decrease", "either"] = "increase"
    """Which change is a regression: increase (errors, latency), decrease (confidence) or either."""
    failure_margin: Annotated[float, Field(ge=0, le=10)] = 0.0
    """Relative change tolerated before rollback: roll back once the confidence bound on
    candidate/stable proves it is more than (1 + failureMargin) times worse."""
    pass_margin: Annotated[float, Field(ge=0, le=10)] = 0.2
    """Relative change accepted for promotion: promote once the bound proves the candidate is
    less than (1 + passMargin) times worse."""
    failure_margin_absolute: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Absolute change tolerated before rollback, in events per trial (0.001 is 0.1 percentage
    points), on top of failureMargin: roll back once the candidate's rate is proven above
    (1 + failureMargin) x baseline + failureMarginAbsolute (mirrored with direction decrease).
    A baseline with no errors at all then tolerates a handful instead of rolling back on each."""
    pass_margin_absolute: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Absolute change accepted for promotion, in events per trial, on top of passMargin:
    promote once the candidate's rate is proven below (1 + passMargin) x baseline +
    passMarginAbsolute."""
    dispersion: Literal["estimated", "binomial"] = "estimated"
    """What the counts are assumed to be. estimated: nothing about how requests fail together
    (retries, one bad client, per-pod noise); the spread of the counts beyond binomial is
    estimated from the intervals and widens the evidence. binomial: every request fails
    independently with one probability per revision and interval; decides sooner, but rolls
    back good candidates far more often than alpha when that does not hold."""
    threshold_range: ThresholdRange | None = None
    """Absolute bounds the candidate's own estimate must also respect."""
    critical: bool = False
    """A critical metric rolls back at once on failure, whatever the other metrics say."""
    min_samples: Annotated[int, Field(ge=1)] | None = None
    """Overrides analysis.minSamples for this metric."""

    rules = (
        one_of("builtin", "prometheus", "a metric sets exactly one of builtin or prometheus"),
        _limited("calibrationError", "the largest expected calibration error the candidate may show, e.g. 0.05"),
        _limited("inputDrift", "the largest population stability index a feature may reach, e.g. 0.2"),
        _limited(
            "attributionShift",
            "the largest total variation distance between the revisions' most attributed features, e.g. 0.2",
        ),
        Rule(
            cel="(has(self.builtin) && self.builtin == 'latency') == has(self.latencyThreshold)",
            message="latencyThreshold is required for builtin latency and only allowed there",
            check=lambda s: (s.builtin == "latency") == (s.latency_threshold is not None),
        ),
        # Only requests above a bucket edge can be counted from a histogram: any other threshold
        # would leave the latency judge without data for ever.
        Rule(
            cel="!has(self.latencyThreshold) || duration(self.latencyThreshold) in ["
            + ", ".join(f"duration('{edge}')" for edge in LATENCY_THRESHOLDS)
            + "]",
            message="latencyThreshold must be a bucket edge of the latency histograms: "
            + ", ".join(LATENCY_THRESHOLDS),
            check=lambda s: (
                s.latency_threshold is None or duration_text(seconds(s.latency_threshold)) in LATENCY_THRESHOLDS
            ),
        ),
    )


class PrometheusSource(ApiModel):
    """The Prometheus server that analysis queries."""

    address: Url = "http://prometheus-operated.monitoring.svc:9090"
    """Base URL of the Prometheus HTTP API."""
    timeout: Duration = "10s"
    """Timeout of one query."""
    bearer_token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a bearer token for Prometheus."""


class PostPromotionSpec(ApiModel):
    """Keep watching a revision after it is promoted: a CUSUM on its error rate and slow-request
    rate (the errorRate and latency metrics) against the rates it showed during its rollout, and
    a rollback to the revision it replaced when either rises."""

    duration: Duration = "30m"
    """How long after promotion the revision is watched."""
    shift: Annotated[float, Field(gt=1, le=20)] = 2.0
    """The rise the watch is tuned to catch, as a multiple of the rollout's rate (2: a doubling)."""
    false_alarm_intervals: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    """Average number of analysis intervals between false alarms on a revision that has not
    changed (the CUSUM threshold is its logarithm): 1000 at 30 s is about one per 8 hours."""
    action: Literal["rollback", "none"] = "rollback"
    """rollback: make the replaced revision stable again; none: a Warning event and status only."""


class AnalysisSpec(ApiModel):
    """Sequential comparison of the candidate against stable, valid however often it is checked."""

    interval: Duration = "30s"
    """How often metrics are read and the test is updated."""
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    """Chance of a false rollback over the whole rollout, split across metrics."""
    min_samples: Annotated[int, Field(ge=1)] = 200
    """Requests per arm before promotion is possible."""
    min_duration: Duration = "2m"
    """Least time analysed before promotion is possible."""
    consecutive_error_limit: Annotated[int, Field(ge=0, le=100)] = 4
    """Failed metric queries in a row before AnalysisAvailable turns False (weights stay frozen)."""
    metrics: Annotated[list[MetricSpec], Field(min_length=1, max_length=16)] = [
        MetricSpec(name="error-rate", builtin="errorRate", critical=True)
    ]
    """What to compare; defaults to the error rate."""
    prometheus: PrometheusSource = PrometheusSource()
    """Where to read metrics."""
    post_promotion: PostPromotionSpec | None = None
    """Watch the revision after promotion and roll back if it regresses; unset: no watch."""

    rules = (
        Rule(
            cel="self.metrics.all(m, self.metrics.filter(o, o.name == m.name).size() == 1)",
            message="analysis metric names must be unique",
            check=lambda s: len({m.name for m in s.metrics}) == len(s.metrics),
        ),
        Rule(
            cel="!has(self.postPromotion) || "
            "self.metrics.exists(m, has(m.builtin) && (m.builtin == 'errorRate' || m.builtin == 'latency'))",
            message="analysis.postPromotion watches the errorRate and latency metrics: add one of them to "
            "analysis.metrics",
            check=lambda s: s.post_promotion is None or any(m.builtin in ("errorRate", "latency") for m in s.metrics),
        ),
        Rule(
            cel="duration(self.minDuration) >= duration(self.interval)",
            message="analysis.minDuration must be at least one analysis.interval",
            check=lambda s: seconds(s.min_duration) >= seconds(s.interval),
        ),
    )


# --------------------------------------------------------------------------- traffic, fallback


class ParentRef(ApiModel):
    """A Gateway API parent (usually a Gateway) the HTTPRoute attaches to."""

    name: DNSLabel
    """Gateway name."""
    namespace: DNSLabel | None = None
    """Gateway namespace; defaults to the ModelDeployment's."""
    section_name: DNSLabel | None = None
    """Listener name."""


class GatewayApiTraffic(ApiModel):
    """Routing through a Gateway API implementation with a weighted HTTPRoute."""

    parent_refs: Annotated[list[ParentRef], Field(min_length=1, max_length=8)]
    """Gateways the route attaches to."""
    hostnames: Annotated[list[str], Field(max_length=16)] = []
    """Hostnames the route matches."""


class TrafficSpec(ApiModel):
    """How live traffic reaches the revisions."""

    provider: Literal["gateway", "gatewayAPI", "replicas"] = "gateway"
    """gateway: cutover's own gateway (no mesh needed); gatewayAPI: a weighted HTTPRoute with a
    mirror filter; replicas: one Service named after the ModelDeployment, with no router. With
    replicas a canary's weights are approximated by replica counts (status.traffic shows the real
    share of ready pods, at least one candidate pod once a step's weight is above 0) and the old
    stable's pods go at promotion; blue/green's Service selects the live revision only."""
    gateway_api: GatewayApiTraffic | None = Field(default=None, alias="gatewayAPI")
    """Settings for provider gatewayAPI."""

    rules = (
        Rule(
            cel="has(self.gatewayAPI) == (self.provider == 'gatewayAPI')",
            message="traffic.gatewayAPI must be set exactly when traffic.provider is gatewayAPI",
            check=lambda s: (s.gateway_api is not None) == (s.provider == "gatewayAPI"),
        ),
    )


class CircuitBreaker(ApiModel):
    """When a link of the fallback chain is skipped after failing."""

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    """Consecutive failures that open the breaker."""
    open_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    """How long the breaker stays open before one trial request."""


class BaselineModel(ApiModel):
    """A simple model that answers when the primary and previous versions cannot."""

    format: Literal["onnx", "pytorch", "tensorflow"]
    """Artifact format (tensorflow: a SavedModel directory)."""
    storage_uri: StorageUri
    """Where the artifact lives."""


class FallbackSpec(ApiModel):
    """Who answers when the primary model fails or is unsure: previous version, baseline, default."""

    confidence_threshold: Fraction | None = None
    """Top-class probability below which the next link of the chain answers instead."""
    previous_version: bool = True
    """Try the previous stable revision first."""
    baseline: BaselineModel | None = None
    """Then a simple baseline model."""
    safe_default: Annotated[
        dict[str, Any],
        Field(json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = {}
    """Finally a fixed response: Open Inference Protocol outputs, returned as they are."""
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    """When a failing link is skipped."""


class FeedbackSpec(ApiModel):
    """Keep the gateway's answers for ground-truth feedback (``POST /v2/models/{name}/feedback``
    with the answer's id and its truth), which becomes per-revision accuracy and calibration: the
    ``accuracy`` and ``calibrationError`` builtin metrics, and the ``cutover_gateway_feedback_*``
    series. The gateway reads each answer's top class from the output named here; answers of
    models without this block are not parsed."""

    output: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    """The output holding the class: probabilities or scores (the arg-max is the class), class
    indices, labels, or Triton's classification extension; unset: the answer's first output."""


# --------------------------------------------------------------------------- spec


class ModelDeploymentSpec(ApiModel):
    """The desired model, how it runs, and how a new version replaces the current one."""

    model: ModelSpec
    """The model artifact and its contract."""
    runtime: RuntimeSpec = RuntimeSpec()
    """How the serving pods run."""
    strategy: StrategySpec
    """How a new revision replaces the stable one."""
    analysis: AnalysisSpec = AnalysisSpec()
    """How the candidate is judged."""
    traffic: TrafficSpec = TrafficSpec()
    """How live traffic is split."""
    safety_policy_ref: LocalObjectRef | None = None
    """SafetyPolicy applied on the serving path."""
    fallback: FallbackSpec | None = None
    """Fallback chain for failed or unsure predictions."""
    feedback: FeedbackSpec | None = None
    """Keep answers for ground-truth feedback at the gateway; unset: no feedback is taken."""
    progress_deadline_seconds: Annotated[int, Field(ge=30, le=604800)] = 3600
    """A rollout with no progress for this long is rolled back."""
    revision_history_limit: Annotated[int, Field(ge=0, le=100)] = 10
    """Old revisions remembered for `kubectl cutover rollback --to-revision`."""

    rules = (
        Rule(
            cel="self.model.name == oldSelf.model.name",
            message="model.name cannot change: it is the endpoint clients call; create a new ModelDeployment "
            "for a different model",
            check=lambda new, old: new.model.name == old.model.name,
            transition=True,
        ),
        Rule(
            cel="self.strategy.type != 'abTest' || "
            "self.analysis.metrics.exists(m, m.name == self.strategy.abTest.metric)",
            message="strategy.abTest.metric must name one of analysis.metrics",
            check=lambda s: (
                s.strategy.ab_test is None or any(m.name == s.strategy.ab_test.metric for m in s.analysis.metrics)
            ),
        ),
        Rule(
            cel="self.traffic.provider != 'replicas' || self.strategy.type in ['canary', 'blueGreen']",
            message="traffic.provider replicas can neither mirror nor pin clients; use gateway or gatewayAPI "
            "for shadow and abTest",
            check=lambda s: s.traffic.provider != "replicas" or s.strategy.type in ("canary", "blueGreen"),
        ),
        Rule(
            cel="self.traffic.provider != 'replicas' || !has(self.strategy.canary) || !self.strategy.canary.baseline",
            message="canary baseline pods need routed traffic: with traffic.provider replicas they would join the "
            "live pool and take traffic whether or not the candidate can; use gateway or gatewayAPI",
            check=lambda s: (
                s.traffic.provider != "replicas" or s.strategy.canary is None or not s.strategy.canary.baseline
            ),
        ),
        Rule(
            cel="self.traffic.provider != 'gatewayAPI' || self.strategy.type != 'abTest' || "
            "self.strategy.abTest.assignment.by != 'hashKey'",
            message="gatewayAPI routes cannot hash a key; use assignment by header or cookie, or provider gateway",
            check=lambda s: (
                s.traffic.provider != "gatewayAPI"
                or s.strategy.ab_test is None
                or s.strategy.ab_test.assignment.by != "hashKey"
            ),
        ),
        Rule(
            cel="!has(self.runtime.autoscaling) || !has(self.strategy.blueGreen) || "
            "!has(self.strategy.blueGreen.previewReplicaCount) || "
            "self.strategy.blueGreen.previewReplicaCount <= self.runtime.autoscaling.maxReplicas",
            message="blueGreen.previewReplicaCount must not exceed runtime.autoscaling.maxReplicas",
            check=lambda s: (
                s.runtime.autoscaling is None
                or s.strategy.blue_green is None
                or s.strategy.blue_green.preview_replica_count is None
                or s.strategy.blue_green.preview_replica_count <= s.runtime.autoscaling.max_replicas
            ),
        ),
        Rule(
            cel="has(self.feedback) || !self.analysis.metrics.exists(m, has(m.builtin) && "
            "m.builtin in ['accuracy', 'calibrationError'])",
            message="builtin accuracy and calibrationError read ground-truth feedback: set spec.feedback so the "
            "gateway keeps answers for it",
            check=lambda s: (
                s.feedback is not None or not any(m.builtin in FEEDBACK_METRICS for m in s.analysis.metrics)
            ),
        ),
        Rule(
            cel="has(self.model.outOfDistribution) || !self.analysis.metrics.exists(m, has(m.builtin) && "
            "m.builtin == 'inputDrift')",
            message="builtin inputDrift compares the inputs with the training statistics' histograms: set "
            "model.outOfDistribution (its statisticsUri file holds them)",
            check=lambda s: (
                s.model.out_of_distribution is not None
                or not any(m.builtin == "inputDrift" for m in s.analysis.metrics)
            ),
        ),
        Rule(
            cel="(has(self.runtime.explain) && has(self.runtime.explain.sampleRate)) || "
            "!self.analysis.metrics.exists(m, has(m.builtin) && m.builtin == 'attributionShift')",
            message="builtin attributionShift compares the rows each revision explains in the background: set "
            "runtime.explain.sampleRate (the stable revision needs it too: set it one rollout before the gate)",
            check=lambda s: (
                (s.runtime.explain is not None and s.runtime.explain.sample_rate is not None)
                or not any(m.builtin == "attributionShift" for m in s.analysis.metrics)
            ),
        ),
        Rule(
            cel="self.strategy.type != 'shadow' || !self.analysis.metrics.exists(m, has(m.builtin) && "
            "m.builtin in ['accuracy', 'calibrationError'])",
            message="a shadow candidate's answers never reach clients, so no ground truth comes back for them: "
            "judge a shadow rollout by its agreement with stable, or use a canary for accuracy and calibrationError",
            check=lambda s: (
                s.strategy.type != "shadow" or not any(m.builtin in FEEDBACK_METRICS for m in s.analysis.metrics)
            ),
        ),
        Rule(
            cel="!has(self.feedback) || (self.traffic.provider == 'gateway' && self.model.format != 'llm')",
            message="spec.feedback needs traffic.provider gateway (the gateway keeps the answers) and a model that "
            "answers classes (not format llm)",
            check=lambda s: s.feedback is None or (s.traffic.provider == "gateway" and s.model.format != "llm"),
        ),
        Rule(
            cel="!has(self.runtime.explain) || !has(self.runtime.explain.sampleRate) || "
            "self.model.format in ['onnx', 'pytorch', 'tensorflow']",
            message="runtime.explain.sampleRate needs a model the pod runs itself (format onnx, pytorch or "
            "tensorflow): a language model has no feature attributions, and a remote Triton model's perturbed rows "
            "would count as its traffic",
            check=lambda s: (
                s.runtime.explain is None
                or s.runtime.explain.sample_rate is None
                or s.model.format in ("onnx", "pytorch", "tensorflow")
            ),
        ),
        Rule(
            cel="self.model.format != 'llm' || !has(self.runtime.cache)",
            message="runtime.cache cannot be used with format llm: a language model's answers are sampled and "
            "depend on the whole conversation, so a cached answer would be a different answer; remove runtime.cache",
            check=lambda s: s.model.format != "llm" or s.runtime.cache is None,
        ),
    )


# --------------------------------------------------------------------------- status

Phase = Literal["Pending", "Progressing", "Paused", "Healthy", "Degraded", "RolledBack", "Failed"]
Verdict = Literal["promote", "continue", "rollback", "inconclusive", "unavailable"]
Role = Literal["stable", "candidate", "baseline", "preview", "previous"]
RequestAction = Literal["promote", "abort", "rollback", "rollbackTo", "pause", "resume", "retry", "fallback"]
"""What a handled request asked: an on-call action, or an AlertRule's action (``fallback`` is an
alert's only)."""


class TrafficEntry(ApiModel):
    """One row of the traffic table the gateway routes by."""

    revision: str
    """Revision hash."""
    role: Role
    """What the revision is in the current rollout."""
    weight: Percent
    """Percent of live traffic it answers."""
    mirror_percent: Percent = 0
    """Percent of requests copied to it, whose answers are discarded."""
    service: str | None = None
    """Service that fronts its pods."""


class MetricEvidence(ApiModel):
    """The sequential test's state for one metric."""

    name: str
    """Metric name."""
    candidate_samples: int = 0
    """Trials (requests) seen on the candidate."""
    baseline_samples: int = 0
    """Trials seen on the stable or baseline arm."""
    estimate: float | None = None
    """Point estimate of candidate relative to baseline (rate ratio)."""
    lower: float | None = None
    """Lower confidence bound, valid at any stopping time."""
    upper: float | None = None
    """Upper confidence bound."""
    e_value: float | None = None
    """Evidence against no-regression; rollback once it reaches 1/alpha."""
    p_value: float | None = None
    """Always-valid p-value (the running minimum of 1/e-value, capped at 1)."""
    alpha_spent: float | None = None
    """Share of alpha this metric may spend."""
    decision: Literal["pass", "fail", "continue", "inconclusive"] = "continue"
    """What this metric says."""
    reason: str = ""
    """The decision in words."""


class AnalysisStatus(ApiModel):
    """The last verdict and the evidence behind it."""

    time: datetime | None = None
    """When the metrics were read."""
    verdict: Verdict
    """promote, continue, rollback, inconclusive or unavailable (metrics could not be read)."""
    reason: str = ""
    """The verdict in words, with numbers."""
    metrics: list[MetricEvidence] = []
    """Evidence per metric."""


class RevisionRecord(ApiModel):
    """A revision that was stable once, kept for rollback."""

    revision: str
    """Revision hash."""
    model_version: str
    """model.version of that revision."""
    promoted_at: datetime | None = None
    """When it became stable."""
    spec: Annotated[
        dict[str, Any],
        Field(json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = {}
    """The model and runtime it was built from."""


class HandledRequest(ApiModel):
    """An on-call request taken from an annotation, or an AlertRule's action on one firing of
    the rule (``by: AlertRule/<name>``), handled exactly once."""

    action: RequestAction
    """What was asked."""
    id: str
    """The annotation value: the request id."""
    by: str = ""
    """Who asked (the field manager that last wrote the annotation)."""
    at: datetime | None = None
    """When it was handled."""
    result: str = ""
    """What happened."""


class PostPromotionStatus(ApiModel):
    """The watch on the last promoted revision (analysis.postPromotion)."""

    revision: str
    """The promoted revision being watched."""
    previous: str
    """The revision it replaced: where a rollback goes."""
    baseline: str
    """The arm it was compared with during its rollout (its rates then are the reference)."""
    rollout_started_at: datetime
    """When its rollout began."""
    promoted_at: datetime
    """When it was promoted: the watch reads from then on."""
    until: datetime
    """When the watch ends."""
    state: Literal["Watching", "Passed", "Regressed", "Ended"] = "Watching"
    """Watching; Passed (no rise until the end); Regressed (a rise was found); Ended (stable
    changed for another reason first)."""
    reason: str = ""
    """The watch's last finding, with its statistics."""


class ScaleDown(ApiModel):
    """A revision whose pods are kept until a time, for an instant rollback after a switch."""

    revision: str
    """Revision hash."""
    at: datetime
    """When its pods are removed."""


ScalingLimit = Literal[
    "",
    "Tolerance",
    "ScaleUpStabilization",
    "ScaleDownStabilization",
    "ScaleUpPolicy",
    "ScaleDownPolicy",
    "MinReplicas",
    "MaxReplicas",
    "MetricMissing",
]


class Recommendation(ApiModel):
    """A pod count the metrics asked for, and when (the stabilisation windows read them)."""

    at: datetime
    """When it was computed."""
    replicas: int
    """Pods the metrics asked for, before stabilisation and limits."""


class ScaleEvent(ApiModel):
    """A change of the pod count the autoscaler made (the scaling policies read them)."""

    at: datetime
    """When the count changed."""
    change: int
    """Pods added (above 0) or removed (below 0)."""


class AutoscalingStatus(ApiModel):
    """What the autoscaler last decided and why."""

    current_replicas: int
    """Pods the model ran at full size before the decision."""
    desired_replicas: int
    """Pods it runs at full size now (the stable revision's count; a canary's candidate gets its
    traffic share of it)."""
    metric: Literal["inFlight", "gpuUtilization", ""] = ""
    """The metric that decided (the one asking for most pods); empty when none could be read."""
    value: float | None = None
    """That metric's average per pod."""
    target: int | None = None
    """That metric's target per pod."""
    limited_by: ScalingLimit = ""
    """What held the count away from what the metric asked for: Tolerance (within 10%),
    ScaleUpStabilization, ScaleDownStabilization, ScaleUpPolicy, ScaleDownPolicy (at most
    max(100%, 4 pods) up and 100% down per 15s), MinReplicas, MaxReplicas, or MetricMissing
    (no series: the count is held)."""
    message: str = ""
    """The decision in words."""
    evaluated_at: datetime | None = None
    """When the metrics were last read (every 15s, the HPA's sync period)."""
    recommendations: list[Recommendation] = []
    """Recent recommendations, oldest first (those inside the longer stabilisation window)."""
    scale_events: list[ScaleEvent] = []
    """Changes of the count inside the scaling policies' period, oldest first."""


class ModelDeploymentStatus(ApiModel):
    """What the operator observed and did. Written only by the operator."""

    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    phase: Phase = "Pending"
    """Summary for humans; conditions are the contract."""
    message: str = ""
    """What is happening, in words."""
    conditions: Conditions = []
    """Ready, Progressing, Promoted, RolledBack, AnalysisAvailable, GPUCapacity,
    SafetyPolicyReady, ScalingActive, ScalingLimited; Reconciling (True while the spec is not in
    effect yet) and Stalled (True when it will not be without a new spec or on-call), which
    kstatus and Flux read."""
    stable_revision: str | None = None
    """Revision serving live traffic."""
    candidate_revision: str | None = None
    """Revision being rolled out."""
    current_step_index: int | None = None
    """Index of the canary step in progress."""
    canary_weight: Percent = 0
    """Percent of live traffic on the candidate."""
    step_started_at: datetime | None = None
    """When the current step began."""
    rollout_started_at: datetime | None = None
    """When the current rollout began (the analysis compares from then on)."""
    last_progress_at: datetime | None = None
    """Last time the rollout moved (a step, pods becoming ready); progressDeadlineSeconds counts from it."""
    candidate_ready_replicas: int = 0
    """Most candidate pods ready at once in this rollout; more than that counts as progress."""
    surge_free: bool = False
    """This rollout trades stable pods for candidate pods (surge never, or too few GPUs with auto)."""
    promoting: bool = False
    """The candidate passed and is being brought to full size before it takes all traffic."""
    paused: bool = False
    """Paused by on-call (cutover.dev/pause), or by the operator when metrics stayed unavailable
    past the progress deadline; resume with cutover.dev/resume."""
    pause_reason: str = ""
    """Why the rollout is paused: the on-call request, or what the operator saw."""
    rejected_revision: str | None = None
    """A revision that was rolled back: not rolled out again until the spec changes or on-call retries."""
    scale_down: list[ScaleDown] = []
    """Former revisions whose pods are kept a little longer."""
    traffic: list[TrafficEntry] = []
    """The traffic table the gateway routes by."""
    last_analysis: AnalysisStatus | None = None
    """The last verdict with its evidence."""
    history: list[RevisionRecord] = []
    """Revisions that were stable, newest first, up to revisionHistoryLimit."""
    post_promotion: PostPromotionStatus | None = None
    """The watch on the last promoted revision, when analysis.postPromotion is set."""
    handled_requests: list[HandledRequest] = []
    """On-call requests handled, newest first (the last 20, for people to read)."""
    last_handled_requests: dict[str, str] = {}
    """Per action, the id (annotation value) of the last request handled. An annotation whose
    value equals it is done and never runs again, however many requests come after it."""
    fallback_revision: str | None = None
    """An earlier stable revision serving all live traffic instead of stable, since an
    AlertRule with action fallback fired; ``kubectl cutover resume`` ends it."""
    fallback_reason: str = ""
    """Which AlertRule fired, for which revision, with what value."""
    last_handled_alerts: dict[str, str] = {}
    """Per AlertRule (by name), the firing whose action was last taken (when it started firing):
    one action per firing, however long it lasts."""
    autoscaling: AutoscalingStatus | None = None
    """The autoscaler's last decision, when runtime.autoscaling is set and nothing else scales the pods."""
    scaled_externally: list[str] = []
    """Deployments of this model whose replicas another scaler owns (an HPA, which KEDA also
    creates, or the cutover.dev/scaled-by annotation): the operator leaves their count alone."""


NAME_MAX_LENGTH = 43
"""The longest ModelDeployment name whose children can be named: a revision's baseline Service
is ``<name>-<10-character revision>-baseline``, and a Service name is at most 63 characters."""
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1035 label, the form of a Service name (a letter first, no dots), which every child's
name begins with."""
NAME_SCHEMA = {"type": "string", "maxLength": NAME_MAX_LENGTH, "pattern": NAME_PATTERN}
"""``metadata.name`` in the CRD (the only metadata a CRD may constrain)."""


class ModelDeploymentMeta(ObjectMeta):
    """Metadata whose name the children's names can be built from (:data:`NAME_SCHEMA`)."""

    name: Annotated[str, StringConstraints(max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)] | None = None


class ModelDeployment(ApiModel):
    """A model served behind one endpoint and rolled out safely by cutover."""

    model_config = {"extra": "ignore"}

    api_version: Literal["cutover.dev/v1alpha1"] = "cutover.dev/v1alpha1"
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ModelDeploymentMeta = Field(default_factory=ModelDeploymentMeta)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
