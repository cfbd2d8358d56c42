"""Names that several components share, each defined once: the metric series the serving
runtime and the gateway export and the analysis engine reads, their labels, and the histogram
bucket edges that the API's ``latencyThreshold`` rule refers to.

A name typed twice drifts: a promotion gate once read ``cutover_safety_violations_total``,
which nothing exported, and passed on no evidence. So every series carries the components that
register it (``exported_by``); the engine refuses to judge a series that nobody exports, and a
test builds each component's registry and checks that every series the engine reads is there.

This module imports nothing heavier than the standard library: serving, the gateway, the
operator, the kubectl plugin and ``hack/`` all import it.

Absent series. A series that has no sample for a revision means "no data", never zero: the
analysis verdict is then ``unavailable`` and weights stay frozen. Exporters therefore create
the labelled children of their event counters at 0 when they start (serving does so for
``cutover_predictions_total`` and ``cutover_out_of_distribution_total``), so that "no event
yet" and "not exported" look different. The one documented exception is the ``code`` label of
the request counters: a child per status code appears with its first answer, so a revision
whose requests are present but which has no 5xx child has had zero errors. Serving exports the
out-of-distribution counter only for a model it scores (one with training statistics): an
out-of-distribution gate on any other model has no evidence, and its absent series says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Component = Literal["serving", "gateway"]
Kind = Literal["counter", "histogram", "gauge"]

REVISION_LABELS = ("namespace", "model", "revision")
"""Labels on every series the analysis reads: the ModelDeployment's namespace, ``model.name``
and the revision hash."""


@dataclass(frozen=True)
class Series:
    """One metric family as the exporters register it and the engine selects it.

    ``name`` is the family name given to prometheus_client (which appends ``_total`` to counters
    and ``_bucket``/``_count``/``_sum`` to histograms); ``labels`` are all its label names, in
    registration order; ``exported_by`` the components that register it, empty when none does
    yet, with ``not_exported`` saying why."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = REVISION_LABELS
    exported_by: tuple[Component, ...] = ()
    not_exported: str = ""
    absent_when: str = ""
    """When an exporting component still leaves the series out, if ever (said in the reason of
    the ``unavailable`` verdict that its absence causes)."""

    @property
    def sample(self) -> str:
        """The sample name a query selects: ``<name>_total`` for a counter, ``<name>_bucket``
        for a histogram, the name itself for a gauge."""
        return {"counter": f"{self.name}_total", "histogram": f"{self.name}_bucket", "gauge": self.name}[self.kind]


SERVING_REQUESTS = Series(
    "cutover_serving_requests",
    "counter",
    "Inference and chat requests by HTTP status",
    (*REVISION_LABELS, "code"),
    ("serving",),
)
SERVING_REQUEST_DURATION = Series(
    "cutover_serving_request_duration_seconds", "histogram", "Time from request to response", exported_by=("serving",)
)
GATEWAY_REQUESTS = Series(
    "cutover_gateway_requests",
    "counter",
    "Requests by the revision that answered",
    (*REVISION_LABELS, "role", "code"),
    ("gateway",),
)
GATEWAY_REQUEST_DURATION = Series(
    "cutover_gateway_request_duration_seconds",
    "histogram",
    "Time from request to response, per revision",
    (*REVISION_LABELS, "role"),
    ("gateway",),
)
PREDICTIONS = Series("cutover_predictions", "counter", "Rows answered by the primary model", exported_by=("serving",))
PREDICTION_CONFIDENCE = Series(
    "cutover_prediction_confidence", "histogram", "Top-class probability per row", exported_by=("serving",)
)
OUT_OF_DISTRIBUTION = Series(
    "cutover_out_of_distribution",
    "counter",
    "Rows beyond the out-of-distribution threshold",
    exported_by=("serving",),
    absent_when="serving exports it only for a model with model.outOfDistribution (training statistics)",
)
SAFETY_VIOLATIONS = Series(
    "cutover_safety_violations",
    "counter",
    "Requests in which a SafetyPolicy filter found a violation, at most one per request, filter and scope",
    (*REVISION_LABELS, "filter", "category", "action", "scope"),
    exported_by=("serving",),
    absent_when="serving creates its children only when it applies a SafetyPolicy (a revision without one has none)",
)
SAFETY_CHECKS = Series(
    "cutover_safety_checks",
    "counter",
    "Requests a SafetyPolicy filter checked (the trials its violations are counted against)",
    (*REVISION_LABELS, "filter", "scope"),
    exported_by=("serving",),
    absent_when="serving creates its children only when it applies a SafetyPolicy (a revision without one has none)",
)
INPUT_DRIFT_MAX_FEATURES = 32
"""Input drift: at most this many features per model are binned (the training statistics'
``histograms`` choose which), so a pod exports at most features x bins children of each drift series."""
ATTRIBUTION_SAMPLE_MAX_FEATURES = 32
"""Attribution sampling: at most this many features in the explained input, one child each of
``ATTRIBUTION_TOP_FEATURE`` per pod."""
INPUT_DRIFT_MAX_BINS = 10
"""Input drift: at most this many bins per feature (9 edges), as in the usual PSI deciles."""
INPUT_DRIFT_ABSENT = (
    "serving exports it only for a model whose training statistics (model.outOfDistribution.statisticsUri) "
    "have 'histograms'"
)
INPUT_FEATURE_ROWS = Series(
    "cutover_input_feature_rows",
    "counter",
    "Rows of the scored input by feature and by the bin of the training statistics' edges their value falls in",
    (*REVISION_LABELS, "feature", "bin"),
    exported_by=("serving",),
    absent_when=INPUT_DRIFT_ABSENT,
)
"""``bin`` is the bin's index, "0" for values at or below the first edge; a NaN value is not counted."""
INPUT_FEATURE_REFERENCE = Series(
    "cutover_input_feature_reference",
    "gauge",
    "Share of the training rows in each bin of a feature (the reference the input drift is measured against)",
    (*REVISION_LABELS, "feature", "bin"),
    exported_by=("serving",),
    absent_when=INPUT_DRIFT_ABSENT,
)
ATTRIBUTION_TOP_FEATURE = Series(
    "cutover_attribution_top_feature",
    "counter",
    "Rows explained in the background (runtime.explain.sampleRate) by the feature with the largest |attribution| "
    "of the predicted output",
    (*REVISION_LABELS, "feature"),
    exported_by=("serving",),
    absent_when="serving counts sampled rows only with runtime.explain.sampleRate set (a revision deployed "
    "without it has none: set it one rollout before gating on attributionShift)",
)
SHADOW_COMPARISONS = Series(
    "cutover_gateway_shadow_comparisons",
    "counter",
    "Mirrored answers compared with the live answer",
    (*REVISION_LABELS, "agree"),
    ("gateway",),
)
FEEDBACK_ABSENT = (
    "the gateway exports it for a revision once it answered a request of a ModelDeployment with spec.feedback "
    "(HTTP inference through the gateway)"
)
FEEDBACK = Series(
    "cutover_gateway_feedback",
    "counter",
    "Rows of answers given ground truth (POST /v2/models/{name}/feedback), by whether the answer's top class was it",
    (*REVISION_LABELS, "outcome"),
    exported_by=("gateway",),
    absent_when=FEEDBACK_ABSENT,
)
"""``outcome`` is ``correct`` or ``incorrect``; one per row, counted once per request id."""
FEEDBACK_BY_CONFIDENCE = Series(
    "cutover_gateway_feedback_by_confidence",
    "counter",
    "Rows given ground truth whose answer had a top-class probability, by probability bucket and outcome",
    (*REVISION_LABELS, "bucket", "outcome"),
    exported_by=("gateway",),
    absent_when=FEEDBACK_ABSENT,
)
"""``bucket`` is the upper edge of the row's ``CALIBRATION_BUCKETS`` bin (``0.1`` holds [0, 0.1),
``1`` holds [0.9, 1]); rows whose answer carries no probability (a label output) are not here."""
FEEDBACK_CONFIDENCE = Series(
    "cutover_gateway_feedback_confidence",
    "counter",
    "Sum of the top-class probabilities of the rows in cutover_gateway_feedback_by_confidence, by bucket",
    (*REVISION_LABELS, "bucket"),
    exported_by=("gateway",),
    absent_when=FEEDBACK_ABSENT,
)
"""With the two above, the expected calibration error of a revision over a window is PromQL:
``sum(abs(correct_b - confidence_b)) / sum(rows_b)`` over buckets b (docs/analysis.md)."""
CALIBRATION_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Upper edges of the ten equal-width top-class probability bins of the expected calibration
error (Guo et al., "On Calibration of Modern Neural Networks", 2017, section 2)."""
SERVING_IN_FLIGHT = Series("cutover_serving_in_flight", "gauge", "Requests in progress", exported_by=("serving",))
"""One series per serving pod; the autoscaler's ``targetInFlight`` is held against its average."""
GPU_UTILIZATION = "DCGM_FI_DEV_GPU_UTIL"
"""NVIDIA DCGM exporter's GPU utilisation gauge (percent, one series per GPU, labelled with the
``namespace`` and ``pod`` it is allocated to): what ``targetGpuUtilization`` is held against. Not
cutover's own series, so not in ``SERIES``; the local stack exports a stand-in under this name."""

REQUESTS: dict[Component, Series] = {"serving": SERVING_REQUESTS, "gateway": GATEWAY_REQUESTS}
"""Request counters by the component that counts them (the gateway when it routes the traffic)."""
REQUEST_DURATION: dict[Component, Series] = {"serving": SERVING_REQUEST_DURATION, "gateway": GATEWAY_REQUEST_DURATION}
"""Request latency histograms by the component that measures them."""
SERIES = (
    SERVING_REQUESTS,
    SERVING_REQUEST_DURATION,
    GATEWAY_REQUESTS,
    GATEWAY_REQUEST_DURATION,
    PREDICTIONS,
    PREDICTION_CONFIDENCE,
    OUT_OF_DISTRIBUTION,
    INPUT_FEATURE_ROWS,
    INPUT_FEATURE_REFERENCE,
    ATTRIBUTION_TOP_FEATURE,
    SAFETY_VIOLATIONS,
    SAFETY_CHECKS,
    SHADOW_COMPARISONS,
    SERVING_IN_FLIGHT,
    FEEDBACK,
    FEEDBACK_BY_CONFIDENCE,
    FEEDBACK_CONFIDENCE,
)
"""Every series in this contract."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Bucket edges (seconds) of both request-duration histograms; ``latencyThreshold`` must be one."""
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""Bucket edges of ``cutover_prediction_confidence`` (top-class probability)."""


def duration_text(seconds: float) -> str | None:
    """``seconds`` as an API duration string (``250ms``, ``1s``, ``2500ms``), or None when the
    API's duration syntax (whole ms, s, m or h) cannot write it."""
    ms = round(seconds * 1000)
    if ms <= 0 or not math.isclose(ms / 1000, seconds, rel_tol=1e-9, abs_tol=0.0):
        return None
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


LATENCY_THRESHOLDS = tuple(text for edge in LATENCY_BUCKETS if (text := duration_text(edge)) is not None)
"""The latency bucket edges a ``latencyThreshold`` can name (0.5 ms and 2.5 ms are edges too, but
the duration syntax has no unit below the millisecond)."""


def interval_text(lower: float | None, upper: float | None, digits: int = 3) -> str:
    """A confidence interval in words, unbounded sides shown as such: ``[0.8, 1.3]``, ``[0, ∞)``.

    ``None`` or an infinite value is an unbounded side (status omits a bound that does not
    exist: JSON has no infinity); a finite bound is written with ``digits`` significant digits."""

    def finite(x: float | None) -> bool:
        return x is not None and math.isfinite(x)

    left = f"[{lower:.{digits}g}" if finite(lower) else "(-∞"
    right = f"{upper:.{digits}g}]" if finite(upper) else "∞)"
    return f"{left}, {right}"


# ---- Ports, headers, labels and annotations ---------------------------------------------------
# The operator writes these into the objects it makes, serving and the gateway read or send them,
# and hack/runner.py follows them to start the local data plane. Label and annotation keys live
# under the API group's domain (cutover.dev), except the app.kubernetes.io recommended labels.

SERVING_PORT = 8080
"""The port a serving process listens on in a pod, and its Services' port (named ``http``)."""
GATEWAY_PORT = 8080
"""The port the gateway listens on by default (its pod and Service in the Helm chart use it too)."""
SERVING_GRPC_PORT = 8081
"""The port a serving process takes Open Inference Protocol gRPC calls on in a pod (named ``grpc``),
KServe's and MLServer's default."""
GATEWAY_GRPC_PORT = 8081
"""The gateway's gRPC port in its pod and Service (the Helm chart's ``gateway.grpcPort``)."""

PROBE_TIMEOUT_SECONDS = 1
"""How long the kubelet waits for a serving pod's health answers (the probes' ``timeoutSeconds``,
Kubernetes' default made explicit): serving must answer ``/v2/health/live`` within it however
large the requests it is working on (serving/offload.py)."""

REVISION_HEADER = "Cutover-Revision"
"""Response header naming the revision that answered; the fallback chain also reads it to tell
its own revision's answers from another's."""
REQUEST_ID_HEADER = "X-Request-Id"
"""Request header with the client's request id: forwarded by the gateway, recorded by serving's
audit log."""
API_KEY_HEADER = "X-API-Key"
"""Request header carrying a gateway API key (``Authorization: Bearer`` is the other place)."""

LABEL_MODEL = "cutover.dev/model"
"""Label on every child and pod: the ModelDeployment's name."""
LABEL_REVISION = "cutover.dev/revision"
"""Label on every child and pod: the revision (with ``-baseline`` for fresh baseline pods); a
per-revision Service selects its pods by it."""
LABEL_ROLE = "cutover.dev/role"
"""Label on Deployments and Services (not pods, so a role change never restarts them): the
revision's role (``Role`` in the API: stable, candidate, baseline, preview or previous)."""
LABEL_SHARD = "cutover.dev/shard"
"""Label on ModelDeployments, SafetyPolicies and AlertRules: the operator shard that serves the
object (``cutover operator --shard NAME``), when several operators share a cluster."""
LABEL_API_KEY = "cutover.dev/api-key"
"""Label (value ``true``) on the Secrets that hold gateway API keys."""
ANNOTATION_MIN_TIER = "cutover.dev/min-tier"
"""ModelDeployment annotation: the lowest API key tier the gateway lets through to it."""

LABEL_APP_NAME = "app.kubernetes.io/name"
"""Recommended label; ``SERVING_APP_NAME`` on serving Deployments and pods."""
SERVING_APP_NAME = "cutover-serving"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
"""Recommended label; ``MANAGER`` on every Deployment and Service the operator makes."""
MANAGER = "cutover"
ANNOTATION_SCALED_BY = "cutover.dev/scaled-by"
"""ModelDeployment annotation naming what scales its pods instead of the operator (``keda``,
``hpa``, any platform's name): the operator then leaves ``spec.replicas`` of its Deployments
alone. An HPA (KEDA makes one per ScaledObject) whose scaleTargetRef names one of its
Deployments is found without it."""


# ---- Series the operator exports ---------------------------------------------------------------
# The operator is not a data-plane component (``Component``): its series leave ``exported_by``
# empty and stay out of ``SERIES`` (which the analysis engine reads); operator/metrics.py exports them.

REVISION_ROLE = Series(
    "cutover_revision_role",
    "gauge",
    "1 for every live revision of a ModelDeployment (a row of its status.traffic), labelled with its role",
    (*REVISION_LABELS, "role"),
)
"""The role of each live revision (``Role`` in the API: stable, candidate, baseline, preview or
previous), set from every ModelDeployment's status. The serving series know no role, so a
PromQL rule judged relative to the stable revision joins on this one
(``* on(namespace, model, revision) group_left(role)``); a revision that is no longer live has
no sample, so rules joined on it skip revisions that are gone."""

ANNOTATION_RUNBOOK_URL = "cutover.dev/runbook-url"
"""AlertRule annotation: the runbook its notifications and rendered PrometheusRule link to,
instead of docs/runbooks.md's section for its builtin metric (a rule with a ``query`` has none)."""

RUNBOOKS = "docs/runbooks.md"
"""The runbooks, one section per builtin metric (``RUNBOOK_ANCHORS``); notifications and rendered
PrometheusRules link to ``RUNBOOKS#<anchor>`` unless the AlertRule sets ``ANNOTATION_RUNBOOK_URL``."""

RUNBOOK_ANCHORS = {
    "errorRate": "error-rate",
    "latencyP99": "latency",
    "latencyP50": "latency",
    "predictionConfidence": "prediction-confidence",
    "outOfDistributionRate": "out-of-distribution-rate",
    "safetyViolationRate": "safety-violations",
    "requestRate": "no-predictions",
    "accuracy": "accuracy-drop",
    "calibrationError": "calibration",
    "inputDrift": "input-drift",
}
"""AlertRule builtin metric -> the anchor of its section in ``RUNBOOKS`` (the GitHub slug of the
section's heading: ``## Error rate`` is ``error-rate``); a test checks every anchor has its heading."""


# ---- SafetyPolicy delivery -------------------------------------------------------------------
# The operator renders each SafetyPolicy as a ConfigMap (and, when its crisis webhook URL comes
# from a Secret, a Secret of its own) and mounts both into the serving pods of the
# ModelDeployments that reference it; `cutover serve --safety-policy --safety-secrets-dir` reads
# them, and hack/runner.py materialises them for local serving processes.

SAFETY_OBJECT_PREFIX = "cutover-safety-"
"""The rendered ConfigMap and the copied Secret are both named this plus the policy's name."""
SAFETY_POLICY_KEY = "policy.json"
"""ConfigMap key: the SafetyPolicy as JSON (apiVersion, kind, metadata name/namespace/generation/uid, spec)."""
SAFETY_ESCALATION_URL_KEY = "escalation-url"
"""Secret key (and file in the secrets dir): the crisis escalation webhook's URL, copied from
the Secret that ``crisis.escalationWebhook.urlSecretRef`` names."""
SAFETY_POLICY_DIR = "/etc/cutover/safety/policy"
"""Where a serving pod mounts the rendered ConfigMap (``--safety-policy`` is ``<dir>/policy.json``)."""
SAFETY_SECRETS_DIR = "/etc/cutover/safety/secrets"
"""Where a serving pod mounts the copied Secret (``--safety-secrets-dir``)."""
