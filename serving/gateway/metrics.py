"""The gateway's Prometheus series, in one registry per gateway (tests run several in a process).

The series the analysis engine reads (requests and their duration per revision, shadow
comparisons) are named in the contract (``cutover.api.contract``), which also says which labels
they carry; the others are the gateway's own (refusals, retries, shedding, mirroring, circuit
breakers), read only by operators' dashboards and the gateway's tests, and named here.

Labels: namespace, model (the model's name, ``spec.model.name``), revision and, on requests,
role, as the analysis selects them. Label children are cached: ``labels()`` costs a lock and a
dict lookup per call, and the request path calls it on every answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cutover.api.contract import (
    CALIBRATION_BUCKETS,
    FEEDBACK,
    FEEDBACK_BY_CONFIDENCE,
    FEEDBACK_CONFIDENCE,
    GATEWAY_REQUEST_DURATION,
    GATEWAY_REQUESTS,
    LATENCY_BUCKETS,
    SHADOW_COMPARISONS,
)

from ..metrics import BREAKER_STATES
from .keys import Denied
from .routing import Backend, Route
from .shadow import Outcome

if TYPE_CHECKING:
    from .proxy import RetryReason

DIVERGENCE_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Bucket edges of ``cutover_gateway_shadow_divergence`` (absolute output difference, or 1 - F1
of a chat answer's words)."""


class GatewayMetrics:
    """Every series the gateway exports, with one method per event it counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        requests, duration, comparisons = GATEWAY_REQUESTS, GATEWAY_REQUEST_DURATION, SHADOW_COMPARISONS
        self._requests = Counter(requests.name, requests.help, requests.labels, registry=self.registry)
        self._duration = Histogram(
            duration.name, duration.help, duration.labels, buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self._rate_limited = Counter(
            "cutover_gateway_rate_limited",
            "Requests refused over a rate limit or quota",
            ["tier"],
            registry=self.registry,
        )
        self._denied = Counter("cutover_gateway_denied", "Requests refused by auth", ["code"], registry=self.registry)
        self._retries = Counter("cutover_gateway_retries", "Attempts retried", ["reason"], registry=self.registry)
        self._shed = Counter(
            "cutover_gateway_shed", "Requests shed because the gateway is saturated", registry=self.registry
        )
        self._comparisons = Counter(comparisons.name, comparisons.help, comparisons.labels, registry=self.registry)
        self._divergence = Histogram(
            "cutover_gateway_shadow_divergence",
            "Largest absolute difference between mirrored and live outputs",
            ["namespace", "model", "revision"],
            buckets=DIVERGENCE_BUCKETS,
            registry=self.registry,
        )
        self._mirror_skipped = Counter(
            "cutover_gateway_mirror_skipped", "Mirrors skipped at capacity", registry=self.registry
        )
        self._breaker = Gauge(
            "cutover_gateway_circuit_breaker_state",
            "0 closed, 1 half-open, 2 open",
            ["namespace", "model", "revision"],
            registry=self.registry,
        )
        self._watch_restarts = Counter(
            "cutover_gateway_watch_restarts",
            "Lists of the gateway's watches (modeldeployments, secrets) started again after the first, by why: "
            "ended (the API server ended the watch) or failed (a list or the connection failed)",
            ["resource", "reason"],
            registry=self.registry,
        )
        self._feedback = Counter(FEEDBACK.name, FEEDBACK.help, FEEDBACK.labels, registry=self.registry)
        self._by_confidence = Counter(
            FEEDBACK_BY_CONFIDENCE.name,
            FEEDBACK_BY_CONFIDENCE.help,
            FEEDBACK_BY_CONFIDENCE.labels,
            registry=self.registry,
        )
        self._confidence = Counter(
            FEEDBACK_CONFIDENCE.name, FEEDBACK_CONFIDENCE.help, FEEDBACK_CONFIDENCE.labels, registry=self.registry
        )
        self._feedback_refused = Counter(
            "cutover_gateway_feedback_refused",
            "Ground-truth feedback items refused, by why: unknown (no answer with that id, or evicted), late "
            "(answered longer ago than the feedback window), duplicate (already given), ambiguous (the id "
            "answered twice), invalid (a truth that does not fit the answer)",
            ["namespace", "model", "reason"],
            registry=self.registry,
        )
        self._unreadable = Counter(
            "cutover_gateway_feedback_unreadable",
            "Answers of a ModelDeployment with spec.feedback whose predicted class could not be read (not kept)",
            ["namespace", "model", "revision"],
            registry=self.registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._feedback_children: set[tuple[str, str, str]] = set()
        """(namespace, model, revision) whose feedback children exist."""

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def request(self, route: Route, backend: Backend, code: int, seconds: float) -> None:
        """One answer (or failure, with the status the gateway answered in its place) of
        ``backend``, live or mirrored, that took ``seconds``."""
        values = (route.namespace, route.model, backend.revision, backend.role)
        self._child(self._requests, *values, str(code)).inc()
        self._child(self._duration, *values).observe(seconds)

    def comparison(self, route: Route, backend: Backend, outcome: Outcome) -> None:
        """One mirrored answer of ``backend`` compared with the live one."""
        values = (route.namespace, route.model, backend.revision)
        self._child(self._comparisons, *values, str(outcome.agree).lower()).inc()
        if outcome.divergence is not None:
            self._child(self._divergence, *values).observe(outcome.divergence)

    def breaker(self, route: Route, backend: Backend, state: str) -> None:
        """The state of ``backend``'s circuit breaker (closed, half_open or open) as it is now."""
        value = BREAKER_STATES[str(state)]
        self._child(self._breaker, route.namespace, route.model, backend.revision).set(value)

    def refused(self, denied: Denied) -> None:
        """A request refused by auth (401, 403: by code) or over a rate limit or quota (429: by tier)."""
        if denied.status == 429:
            self._rate_limited.labels(denied.tier).inc()
        else:
            self._denied.labels(str(denied.status)).inc()

    def retried(self, reason: RetryReason) -> None:
        """An attempt retried, and why."""
        self._retries.labels(reason.value).inc()

    def shed(self) -> None:
        """A request refused (503) because the gateway had ``max_in_flight`` in progress."""
        self._shed.inc()

    def watch_restarted(self, resource: str, reason: str) -> None:
        """A watch of ``resource`` lists again (``reason``: ended or failed, as the
        :class:`~cutover.serving.kube.Watcher` says): routes and keys may have been stale meanwhile."""
        self._watch_restarts.labels(resource, reason).inc()

    def mirror_skipped(self) -> None:
        """A mirrored copy not sent: too many mirrors in progress, or not a POST."""
        self._mirror_skipped.inc()

    def answer_kept(self, route: Route, backend: Backend) -> None:
        """An answer of ``backend`` kept for feedback: its feedback counters exist from now on, at
        0 until feedback comes ("no feedback yet" is then a present series, not a missing one)."""
        values = (route.namespace, route.model, backend.revision)
        if values in self._feedback_children:
            return
        self._feedback_children.add(values)
        for outcome in ("correct", "incorrect"):
            self._child(self._feedback, *values, outcome)
            for bucket in CALIBRATION_LABELS:
                self._child(self._by_confidence, *values, bucket, outcome)
        for bucket in CALIBRATION_LABELS:
            self._child(self._confidence, *values, bucket)

    def answer_unreadable(self, route: Route, backend: Backend) -> None:
        """An answer of ``backend`` with no class the feedback could be compared with."""
        self._child(self._unreadable, route.namespace, route.model, backend.revision).inc()

    def feedback(self, route: Route, revision: str, correct: bool, confidence: float | None) -> None:
        """One row of ``revision``'s answer given its truth: right or not, and the answer's
        top-class probability (None when the answer had none, as a label output)."""
        values = (route.namespace, route.model, revision)
        outcome = "correct" if correct else "incorrect"
        self._child(self._feedback, *values, outcome).inc()
        if confidence is not None:
            bucket = CALIBRATION_LABELS[calibration_bin(confidence)]
            self._child(self._by_confidence, *values, bucket, outcome).inc()
            self._child(self._confidence, *values, bucket).inc(confidence)

    def feedback_refused(self, route: Route, reason: str) -> None:
        """One feedback item refused, and why (the reasons of ``cutover_gateway_feedback_refused_total``)."""
        self._child(self._feedback_refused, route.namespace, route.model, reason).inc()


CALIBRATION_LABELS = tuple(f"{edge:g}" for edge in CALIBRATION_BUCKETS)
"""The ``bucket`` label of each bin: its upper edge as written (``0.1`` … ``1``)."""


def calibration_bin(confidence: float) -> int:
    """The index of the ``CALIBRATION_BUCKETS`` bin holding ``confidence`` (in [0, 1]): bins are
    closed below and open above, the last closed on both sides."""
    return min(int(confidence * len(CALIBRATION_BUCKETS)), len(CALIBRATION_BUCKETS) - 1)
