"""The serving runtime's Prometheus metrics: labels ``namespace``, ``model`` (the
ModelDeployment's model name) and ``revision`` on every series. The series the analysis engine
reads (requests, request duration, predictions, confidence, out-of-distribution count) and
their buckets are defined in the contract module, ``cutover.api.contract``; the rest are
serving's own.

=============================================  =========  ===========================================
series                                         type       extra labels, buckets
=============================================  =========  ===========================================
cutover_serving_requests_total                 counter    code (HTTP status of infer and chat requests)
cutover_serving_request_duration_seconds       histogram  LATENCY_BUCKETS, whole request in the server
cutover_serving_queue_duration_seconds         histogram  LATENCY_BUCKETS, time in the batch queue
cutover_serving_queue_depth                    gauge      requests waiting in the batch queue (batching only)
cutover_serving_batch_size                     histogram  BATCH_BUCKETS, rows per model call
cutover_serving_in_flight                      gauge      requests being served now
cutover_predictions_total                      counter    rows answered by the primary model
cutover_prediction_confidence                  histogram  CONFIDENCE_BUCKETS, top-class probability
cutover_out_of_distribution_score              histogram  OOD_BUCKETS, score per row (the method's unit)
cutover_out_of_distribution_total              counter    rows above the configured threshold
cutover_input_feature_rows_total               counter    feature, bin: rows per bin of the training edges
cutover_input_feature_reference                gauge      feature, bin: training share of the bin
cutover_serving_fallbacks_total                counter    link (previous, baseline, safe_default), reason
cutover_serving_circuit_breaker_state          gauge      link; 0 closed, 1 half-open, 2 open
cutover_serving_audit_dropped_total            counter    audit records dropped because the writer lagged
cutover_serving_cache_hits_total               counter    requests the prediction cache answered (coalesced ones too)
cutover_serving_cache_misses_total             counter    requests that called the model through the cache
cutover_serving_cache_evictions_total          counter    reason (capacity, expired): answers dropped
cutover_serving_cache_entries                  gauge      answers held
cutover_serving_cache_bytes                    gauge      bytes of outputs held (the bound is maxBytes)
cutover_safety_checks_total                    counter    filter, scope: requests a filter read text of
cutover_safety_violations_total                counter    filter, category, action, scope: requests in
                                                          which it found something (at most one each)
cutover_safety_filter_duration_seconds         histogram  filter; SAFETY_BUCKETS, one filter on one request
                                                          in one direction (inputs and outputs apart)
cutover_safety_filter_errors_total             counter    filter, scope: the filter failed on a request
cutover_safety_policy_info                     gauge      policy, generation: 1 for the one applied
cutover_safety_policy_load_failures_total      counter    policy files that could not be applied
cutover_safety_escalations_total               counter    result (delivered, failed, dropped)
=============================================  =========  ===========================================

The safety series exist (without children) in every server; a server given a SafetyPolicy
creates the children of its filters at 0 when it applies the policy (checks and errors per
filter and scope, violations per filter, category, action and scope), so a gate on a revision
that filters finds zero, not an absent series, and one on a revision that does not filters finds
nothing (``unavailable``).

Latency thresholds in ``analysis.metrics[].latencyThreshold`` must be one of LATENCY_BUCKETS (the
API refuses any other).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cutover.api.contract import (
    ATTRIBUTION_TOP_FEATURE,
    CONFIDENCE_BUCKETS,
    INPUT_FEATURE_REFERENCE,
    INPUT_FEATURE_ROWS,
    LATENCY_BUCKETS,
    OUT_OF_DISTRIBUTION,
    PREDICTION_CONFIDENCE,
    PREDICTIONS,
    REVISION_LABELS,
    SAFETY_CHECKS,
    SAFETY_VIOLATIONS,
    SERVING_IN_FLIGHT,
    SERVING_REQUEST_DURATION,
    SERVING_REQUESTS,
    Series,
)

from .cache import CacheMetrics
from .statistics import InferenceStatistics

if TYPE_CHECKING:
    from .batching import Batcher, BatchStats
    from .drift import FeatureBins, InputBinning

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OOD_BUCKETS = (0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 20, 50)
SAFETY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
"""Seconds one filter takes on one request: the budget is 2 ms for all of them together."""
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
LABELS = REVISION_LABELS


class ServingMetrics:
    """One registry per server, so tests can run several servers in one process."""

    def __init__(
        self,
        namespace: str,
        model: str,
        revision: str,
        in_flight: Callable[[], float],
        *,
        scores_out_of_distribution: bool = False,
        caches_predictions: bool = False,
    ) -> None:
        """``in_flight`` is read at scrape time, so requests pay nothing for the gauge.
        ``scores_out_of_distribution``: whether this server scores rows against training
        statistics; only then is ``cutover_out_of_distribution_total`` exported (at 0 from the
        start), so an out-of-distribution gate on a model that is never scored finds no series
        (``unavailable``) instead of passing on a counter that cannot move.
        ``caches_predictions``: whether this server has a prediction cache; only then are the
        cache series exported (``cache`` is None without one)."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.statistics = InferenceStatistics()
        """Triton's statistics extension (``/v2/models/{name}/stats``), beside the Prometheus series."""
        values = (namespace, model, revision)

        def counter(name: str, doc: str, *extra: str) -> Counter:
            return Counter(name, doc, [*LABELS, *extra], registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=self.registry)

        # Series of the contract (cutover.api.contract): the analysis engine reads them.
        def shared_counter(series: Series) -> Counter:
            return Counter(series.name, series.help, series.labels, registry=self.registry)

        def shared_histogram(series: Series, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(series.name, series.help, series.labels, buckets=buckets, registry=self.registry)

        self._requests = shared_counter(SERVING_REQUESTS)
        self.duration = shared_histogram(SERVING_REQUEST_DURATION, LATENCY_BUCKETS).labels(*values)
        self.queue = histogram(
            "cutover_serving_queue_duration_seconds", "Time a request waited for its batch", LATENCY_BUCKETS
        ).labels(*values)
        self.batch_size = histogram("cutover_serving_batch_size", "Rows per model call", BATCH_BUCKETS).labels(*values)
        self._queue_depth = Gauge(
            "cutover_serving_queue_depth", "Requests waiting in the batch queue", LABELS, registry=self.registry
        )
        Gauge(SERVING_IN_FLIGHT.name, SERVING_IN_FLIGHT.help, SERVING_IN_FLIGHT.labels, registry=self.registry).labels(
            *values
        ).set_function(in_flight)
        # Event counters the analysis reads are created at 0 now: a series that exists says "no
        # event yet", an absent one "not exported" (which the analysis never reads as zero).
        self.predictions = shared_counter(PREDICTIONS).labels(*values)
        self.confidence = shared_histogram(PREDICTION_CONFIDENCE, CONFIDENCE_BUCKETS).labels(*values)
        self.ood_score = histogram(
            "cutover_out_of_distribution_score",
            "Out-of-distribution score of each row (Mahalanobis distance, isolation forest anomaly score or "
            "autoencoder reconstruction error, as outOfDistribution.method says)",
            OOD_BUCKETS,
        ).labels(*values)
        self._ood = shared_counter(OUT_OF_DISTRIBUTION)
        if scores_out_of_distribution:
            self._ood.labels(*values)
        self.attribution_top_feature = shared_counter(ATTRIBUTION_TOP_FEATURE)
        """Explained sampled rows by their most attributed feature (``serving/attribution_sampling.py``)."""
        self._feature_rows = shared_counter(INPUT_FEATURE_ROWS)
        self._feature_reference = Gauge(
            INPUT_FEATURE_REFERENCE.name,
            INPUT_FEATURE_REFERENCE.help,
            INPUT_FEATURE_REFERENCE.labels,
            registry=self.registry,
        )
        self._fallbacks = counter("cutover_serving_fallbacks", "Requests answered by a fallback", "link", "reason")
        self._breaker = Gauge(
            "cutover_serving_circuit_breaker_state",
            "0 closed, 1 half-open, 2 open",
            [*LABELS, "link"],
            registry=self.registry,
        )
        self.audit_dropped = counter("cutover_serving_audit_dropped", "Audit records dropped").labels(*values)
        self._values = values
        self._by_code: dict[int, Counter] = {}
        self.safety = SafetyMetrics(self.registry, values)
        self.cache = PredictionCacheMetrics(self.registry, values) if caches_predictions else None

    def request(self, code: int, seconds: float) -> None:
        counter = self._by_code.get(code)
        if counter is None:
            counter = self._by_code[code] = self._requests.labels(*self._values, str(code))
        counter.inc()
        self.duration.observe(seconds)

    def queue_depth(self, batcher: Batcher) -> None:
        """Export ``batcher``'s queue length, read at scrape time (requests pay nothing for it):
        only a server that batches has the series."""
        self._queue_depth.labels(*self._values).set_function(lambda: batcher.queued)

    def batch(self, stats: BatchStats) -> None:
        """One model call of the batcher: its rows, and how long each request in it waited."""
        self.batch_size.observe(stats.size)
        for waited in stats.queue_seconds:
            self.queue.observe(waited)

    def prediction(self, rows: int, confidence: Iterable[float] | None) -> None:
        """Rows the primary model answered, and each row's top-class probability when known. A
        probability that is not finite (a model's answer to NaN or infinite input) is not one,
        and is left out: one such row would make the histogram's sum NaN for good."""
        self.predictions.inc(rows)
        if confidence is not None:
            for value in confidence:
                if math.isfinite(value):
                    self.confidence.observe(value)

    def out_of_distribution(self, rows: int) -> None:
        """Count rows beyond the out-of-distribution threshold."""
        self._ood.labels(*self._values).inc(rows)

    def watch_inputs(self, binning: InputBinning) -> None:
        """Export the input drift series of ``binning``'s features: each bin's row counter at 0
        and its training share."""
        for feature in binning.features:
            for index, share in enumerate(feature.proportions):
                self._feature_rows.labels(*self._values, feature.name, str(index))
                self._feature_reference.labels(*self._values, feature.name, str(index)).set(share)

    def input_rows(self, counts: Iterable[tuple[FeatureBins, Iterable[int]]]) -> None:
        """Count rows per feature and bin (from :meth:`InputBinning.counts`)."""
        for feature, per_bin in counts:
            for index, rows in enumerate(per_bin):
                if rows:
                    self._feature_rows.labels(*self._values, feature.name, str(index)).inc(int(rows))

    def fallback(self, link: str, reason: str) -> None:
        self._fallbacks.labels(*self._values, link, reason).inc()

    def breaker(self, link: str, state: str) -> None:
        self._breaker.labels(*self._values, link).set(BREAKER_STATES[state])


class PredictionCacheMetrics(CacheMetrics):
    """The prediction cache's series (``serving/cache.py``), created at 0 with the cache: a
    server without one exports none."""

    def __init__(self, registry: CollectorRegistry, values: tuple[str, ...]) -> None:
        def series(kind: type[Counter] | type[Gauge], name: str, doc: str) -> Any:
            return kind(name, doc, LABELS, registry=registry).labels(*values)

        self._hits = series(Counter, "cutover_serving_cache_hits", "Requests the prediction cache answered")
        self._misses = series(Counter, "cutover_serving_cache_misses", "Requests that called the model via the cache")
        evictions = Counter(
            "cutover_serving_cache_evictions",
            "Answers the prediction cache dropped",
            [*LABELS, "reason"],
            registry=registry,
        )
        self._evictions = {reason: evictions.labels(*values, reason) for reason in ("capacity", "expired")}
        self._entries = series(Gauge, "cutover_serving_cache_entries", "Answers the prediction cache holds")
        self._bytes = series(Gauge, "cutover_serving_cache_bytes", "Bytes of outputs the prediction cache holds")

    def hit(self) -> None:
        self._hits.inc()

    def miss(self) -> None:
        self._misses.inc()

    def evicted(self, reason: Literal["capacity", "expired"]) -> None:
        self._evictions[reason].inc()

    def held(self, entries: Callable[[], float], nbytes: Callable[[], float]) -> None:
        """Read at scrape time: requests pay nothing for the gauges."""
        self._entries.set_function(entries)
        self._bytes.set_function(nbytes)


class SafetyMetrics:
    """The SafetyPolicy series of one server (``values`` are its namespace, model and revision
    label values). The policy engine (``serving/safety/guard.py``) calls these per request."""

    def __init__(self, registry: CollectorRegistry, values: tuple[str, ...]) -> None:
        self._values = values
        self._checks = Counter(SAFETY_CHECKS.name, SAFETY_CHECKS.help, SAFETY_CHECKS.labels, registry=registry)
        self._violations = Counter(
            SAFETY_VIOLATIONS.name, SAFETY_VIOLATIONS.help, SAFETY_VIOLATIONS.labels, registry=registry
        )
        self._duration = Histogram(
            "cutover_safety_filter_duration_seconds",
            "Time one SafetyPolicy filter took on one request's texts in one direction",
            [*LABELS, "filter"],
            buckets=SAFETY_BUCKETS,
            registry=registry,
        )
        self._errors = Counter(
            "cutover_safety_filter_errors",
            "Requests on which a SafetyPolicy filter failed",
            [*LABELS, "filter", "scope"],
            registry=registry,
        )
        self._info = Gauge(
            "cutover_safety_policy_info",
            "The SafetyPolicy generation this server applies (1)",
            [*LABELS, "policy", "generation"],
            registry=registry,
        )
        self._load_failures = Counter(
            "cutover_safety_policy_load_failures",
            "SafetyPolicy files that could not be applied (missing, unreadable or invalid)",
            LABELS,
            registry=registry,
        ).labels(*values)
        self._escalations = Counter(
            "cutover_safety_escalations",
            "Crisis escalation webhook deliveries by result",
            [*LABELS, "result"],
            registry=registry,
        )
        self._applied: tuple[str, str] | None = None
        self._children: dict[tuple[object, ...], Any] = {}

    def applied(
        self, policy: str, generation: int, children: Iterable[tuple[str, str, tuple[str, ...], tuple[str, ...]]]
    ) -> None:
        """A policy generation is now applied: ``cutover_safety_policy_info`` names it (the
        previous generation's child is removed) and the children of its filters exist at 0.
        ``children``: per filter (name, action, categories, scopes)."""
        if self._applied is not None:
            self._info.remove(*self._values, *self._applied)
        self._applied = (policy, str(generation))
        self._info.labels(*self._values, *self._applied).set(1)
        for name, action, categories, scopes in children:
            self._duration.labels(*self._values, name)
            for scope in scopes:
                self._checks.labels(*self._values, name, scope)
                self._errors.labels(*self._values, name, scope)
                for category in categories:
                    self._violations.labels(*self._values, name, category, action, scope)
        for result in ("delivered", "failed", "dropped"):
            self._escalations.labels(*self._values, result)

    def _child(self, family: Counter | Histogram, *labels: str) -> Any:
        """``family``'s child for ``labels`` (after the revision labels), looked up once: a
        request counts several filters, and prometheus_client's ``labels()`` costs more than
        the increment."""
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*self._values, *labels)
        return child

    def checked(self, name: str, scope: str) -> None:
        self._child(self._checks, name, scope).inc()

    def violated(self, name: str, category: str, action: str, scope: str) -> None:
        self._child(self._violations, name, category, action, scope).inc()

    def took(self, name: str, seconds: float) -> None:
        self._child(self._duration, name).observe(seconds)

    def failed(self, name: str, scope: str) -> None:
        self._child(self._errors, name, scope).inc()

    def load_failed(self) -> None:
        self._load_failures.inc()

    def escalation(self, result: str) -> None:
        """One escalation's outcome: ``delivered``, ``failed`` (given up) or ``dropped`` (queue full)."""
        self._escalations.labels(*self._values, result).inc()
