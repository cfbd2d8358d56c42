"""Attribution sampling: a fraction of the rows each successful inference answered is explained
in the background (``--explain-sample-rate``), and each explained row counts the feature that
carries the largest share of its |attribution| (``cutover_attribution_top_feature_total``), so
the rollout can compare which features the candidate relies on with which ones the stable
revision relies on, on the same live traffic.

Why the top feature and not a histogram of each feature's share: every explained row adds one
count to exactly one feature, so a revision's counts are a multinomial sample over its features
and two revisions' counts make a 2 x features contingency table, whose homogeneity has the usual
chi-square (or G) test with features - 1 degrees of freedom. Histograms of shares would put each
row into every feature's histogram: the features' tests are dependent and the rows' shares sum
to 1, so no per-feature test adds up to one valid test without a correction that costs power.
The top feature is also free of the output's units, which two revisions need not share.

Off the hot path: :meth:`AttributionSampler.offer` draws the sampled rows (one binomial draw per
request), copies them and puts them in a bounded queue without waiting; a full queue drops the
row and counts it (``outcome="dropped"``), so inference is never delayed or failed by sampling.
One thread at nice 19 explains the queued rows with the explain endpoint's machinery (its method,
background and ``--explain-timeout``), outside its in-flight limit and its series. The explained
input (``outOfDistribution.input``, else the first) may have at most
``ATTRIBUTION_SAMPLE_MAX_FEATURES`` features, one series child each: a model with more fails its
load saying so.

Series (labels namespace, model, revision as every serving series):
``cutover_attribution_top_feature_total{feature}``,
``cutover_attribution_samples_total{outcome}`` (explained, flat: every attribution zero, failed:
the model failed or the timeout passed, dropped: the queue was full),
``cutover_attribution_samples_pending`` (rows queued or being explained).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping

import numpy as np
from prometheus_client import Counter, Gauge

from .errors import ServingError
from .explain import Explainer, yield_to_inference
from .metrics import ServingMetrics

log = logging.getLogger("cutover.serving")

QUEUE_ROWS = 64
"""Sampled rows waiting to be explained; one more is dropped."""
OUTCOMES = ("explained", "flat", "failed", "dropped")


class AttributionSampler:
    """Explains a ``rate`` (0 to 1) fraction of answered rows with ``explainer`` on one low
    priority thread (the loader has checked the explained input's width)."""

    def __init__(
        self,
        explainer: Explainer,
        rate: float,
        metrics: ServingMetrics,
        *,
        queue_rows: int = QUEUE_ROWS,
    ) -> None:
        registry = metrics.registry
        config = explainer.config
        labels = (config.namespace, config.name, config.revision)
        names = ("namespace", "model", "revision")
        samples = Counter(
            "cutover_attribution_samples",
            "Rows sampled for attributions, by outcome (explained, flat, failed, dropped: the queue was full)",
            [*names, "outcome"],
            registry=registry,
        )
        self._top = metrics.attribution_top_feature
        self._outcomes = {outcome: samples.labels(*labels, outcome) for outcome in OUTCOMES}
        self._pending = 0
        """Rows queued or being explained."""
        self._lock = threading.Lock()
        Gauge(
            "cutover_attribution_samples_pending",
            "Sampled rows queued or being explained",
            names,
            registry=registry,
        ).labels(*labels).set_function(lambda: self._pending)
        self._labels = labels
        self.explainer, self.rate = explainer, rate
        self._rng = np.random.default_rng()
        self._queue: queue.Queue[dict[str, np.ndarray] | None] = queue.Queue(queue_rows)
        self._thread = threading.Thread(target=self._run, name="attribution-sampler", daemon=True)
        self._thread.start()

    def offer(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Queue a random ``rate`` of the rows of ``inputs`` (name -> [rows, ...]) to be explained;
        returns at once, dropping rows the queue has no room for. Inputs without a batch
        dimension are not sampled."""
        arrays = list(inputs.values())
        if not arrays or any(a.ndim < 2 or a.shape[0] != arrays[0].shape[0] for a in arrays):
            return
        rows = arrays[0].shape[0]
        chosen = int(self._rng.binomial(rows, self.rate))
        if not chosen:
            return
        for row in self._rng.choice(rows, chosen, replace=False).tolist():
            with self._lock:  # counted before the worker can take it, so pending never reads low
                self._pending += 1
            try:
                self._queue.put_nowait({name: value[row : row + 1].copy() for name, value in inputs.items()})
            except queue.Full:
                with self._lock:
                    self._pending -= 1
                self._outcomes["dropped"].inc()

    def close(self) -> None:
        """Stop the thread after the row it is explaining; queued rows are forgotten."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)

    def _run(self) -> None:
        yield_to_inference()
        while (inputs := self._queue.get()) is not None:
            self._explain(inputs)
            with self._lock:
                self._pending -= 1

    def _explain(self, inputs: Mapping[str, np.ndarray]) -> None:
        try:
            explanation = self.explainer.explain_rows(inputs)[0]
        except ServingError as error:  # a timeout, or a row the explainer refuses
            log.debug("a sampled row was not explained: %s", error)
            self._outcomes["failed"].inc()
            return
        except Exception as error:
            log.warning("explaining a sampled row of model %s failed: %s", self.explainer.config.name, error)
            self._outcomes["failed"].inc()
            return
        feature = top_feature(explanation)
        if feature is None:
            self._outcomes["flat"].inc()
        else:
            self._top.labels(*self._labels, feature).inc()
            self._outcomes["explained"].inc()


def top_feature(explanation: Mapping[str, object]) -> str | None:
    """The feature with the largest |attribution| of one row's explanation (the explain
    endpoint's shape): of its first output, the predicted column (the largest prediction) when
    the output has several (a classifier's classes), else its only one. None when every
    attribution is zero. The first of equal ones wins."""
    outputs = explanation["outputs"]
    assert isinstance(outputs, list)
    output = outputs[0]
    column = int(np.argmax(output["prediction"]))
    magnitudes = np.abs([a["attribution"][column] for a in output["attributions"]])
    if not magnitudes.size or magnitudes.max() <= 0:
        return None
    return str(output["attributions"][int(np.argmax(magnitudes))]["feature"])
