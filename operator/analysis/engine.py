"""The analysis engine: every ``analysis.interval`` it reads one interval of every metric for the
candidate and baseline revisions, feeds the sequential tests, and returns a verdict with its
evidence. It holds no clock and no cluster client; the operator calls :meth:`Analysis.tick`
with the time and a provider.

The builtin metrics read the series the serving runtime and the gateway export, named once in
the contract module (:mod:`cutover.api.contract`; labels ``namespace``, ``model``,
``revision`` on each):

======================  ===============================================  ===========================
builtin                 events / trials                                  source
======================  ===============================================  ===========================
errorRate               5xx ``code``\\ s / all of ``cutover_*_requests``  gateway, else serving
latency                 ``cutover_*_request_duration_seconds`` above      gateway, else serving
                        ``latencyThreshold`` / all
predictionConfidence    ``cutover_prediction_confidence`` at or below     serving
                        0.5 / all
outOfDistributionRate   ``cutover_out_of_distribution`` /                 serving
                        ``cutover_predictions``
safetyViolations        ``cutover_safety_violations`` /                   serving (SafetyPolicy
                        ``cutover_safety_checks``, both                  filters)
                        ``scope="output"``, summed over filters
accuracy                ``cutover_gateway_feedback``                      gateway (feedback)
                        ``outcome="incorrect"`` / all
calibrationError        expected calibration error of the candidate       gateway (feedback)
                        from ``cutover_gateway_feedback_by_confidence``
                        and ``cutover_gateway_feedback_confidence``
                        against ``thresholdRange.max``
inputDrift              per-feature PSI and KS test of the candidate's    serving (training
                        ``cutover_input_feature_rows`` per bin against    statistics' histograms)
                        its ``cutover_input_feature_reference``
                        (:mod:`.drift`), PSI against
                        ``thresholdRange.max``
attributionShift        the candidate's ``cutover_attribution_top_feature`` serving (runtime.explain
                        shares against stable's: total variation         .sampleRate)
                        against ``thresholdRange.max`` and a chi-square
                        test of homogeneity (:mod:`.attribution`)
======================  ===============================================  ===========================

Accuracy is judged as its complement, the share of fed-back rows the revision got wrong, by the
same anytime-valid rate test as the error rate: a candidate wrong more often than the baseline
(beyond the margins) rolls back. Its trials are the rows given their truth in the interval, not
the requests answered: the test compares the fed-back share of each arm. Feedback arrives after
the answer, so an interval's rows may have been answered in an earlier one; both arms are fed
back the same way, so they compare.

Requests and latency come from the gateway when it routes the traffic (it sees every answer,
including those of a crashing pod), else from the serving pods.

Safety violations are read on the model's answers only (``scope="output"``): what users type
(``scope="input"``) says nothing about the revision, and a burst of abusive users on one arm
must not roll it back. Serving counts a check once per request, filter and scope that read a
text, and a violation at most once per the same; summed over the policy's filters, the gate is
the proportion of (answer, output filter) checks that found something, and both arms answer
under the same policy, so the proportions compare.

What the engine trusts. A series with no sample for an arm is *no data*, never zero: the tick
is ``unavailable`` and the weights stay frozen (the exporters create their event counters at 0,
so "no event yet" is a present series, and serving exports the out-of-distribution counter only
for a model it scores; the one documented exception is a request counter's per-``code`` child,
which appears with its first answer, so absent 5xx children with requests present mean zero
errors; serving creates the safety counters' children for a policy's filters at 0 when it
applies the policy, so a revision serving without a policy, or with no filter on outputs, has
no ``scope="output"`` series and its safety gate is ``unavailable``). A series that no
component exports is never read: its gate is ``unavailable`` with the reason. Every value read
must be a whole, finite, non-negative count of at most 2**53 (histogram buckets must also not
decrease with ``le``); anything else Prometheus can answer (NaN, ±Inf, negative, fractional,
huge) makes the tick ``unavailable`` with a reason naming the metric, the revision and the
value. A tick is all or nothing: it never raises on any value, and a tick that fails changes no
state, so the next one covers the whole gap.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Literal

import numpy as np

from cutover.api.contract import (
    ATTRIBUTION_TOP_FEATURE,
    CONFIDENCE_BUCKETS,
    FEEDBACK,
    FEEDBACK_BY_CONFIDENCE,
    FEEDBACK_CONFIDENCE,
    INPUT_FEATURE_REFERENCE,
    INPUT_FEATURE_ROWS,
    OUT_OF_DISTRIBUTION,
    PREDICTION_CONFIDENCE,
    PREDICTIONS,
    REQUEST_DURATION,
    REQUESTS,
    SAFETY_CHECKS,
    SAFETY_VIOLATIONS,
    Series,
)
from cutover.api.v1alpha1 import seconds
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec, AnalysisStatus, MetricEvidence, MetricSpec, Verdict

from .attribution import AttributionShiftJudge
from .cusum import BinomialCusum
from .drift import FeatureCounts, InputDriftJudge
from .histograms import exceedances
from .judges import (
    Bins,
    CalibrationJudge,
    ConfidenceJudge,
    CountJudge,
    Counts,
    Evidence,
    Histogram,
    JudgeSettings,
    LatencyJudge,
    decide,
)
from .provider import Labels, MetricProvider, MetricsUnavailable, render

RequestSource = Literal["gateway", "serving"]
LOW_CONFIDENCE = 0.5
"""Default top-class probability at or below which a prediction counts as low-confidence (a
bucket edge of ``cutover_prediction_confidence``)."""
SAFETY_SCOPE = "output"
"""The ``scope`` of the safety series a ``safetyViolations`` gate reads: the model's answers,
not what users send it."""
MAX_COUNT = float(2**53)
"""The largest count a tick accepts: beyond it float64 no longer holds every whole number."""
JUDGED_ALONE = frozenset({"inputDrift", "calibrationError"})
"""Builtins that judge the candidate against its own reference (its training data, a limit), the
baseline only reported beside it: the baseline needs no data of them (a stable revision whose
statistics have no histograms, or that answers logits without probabilities), and its samples
do not hold back the verdict."""
_OR_ZERO = re.compile(r"\s+or\s+vector\s*\(\s*0\s*\)\s*$")
_ROUND = re.compile(r"round\s*\((.*)\)", re.DOTALL)
_SELECTOR_TEXT = r"(?P<selector>[A-Za-z_:][A-Za-z0-9_:]*\s*(?:\{[^{}]*\})?)"
_SUM_INCREASE = re.compile(
    r"sum\s*(?:by\s*\(\s*\)\s*)?\(\s*increase\s*\(\s*" + _SELECTOR_TEXT + r"\s*\[[^\]]*\]\s*\)\s*\)"
)
_SELECTOR = re.compile(_SELECTOR_TEXT)
_EXTRAPOLATING = re.compile(r"\b(increase|rate|irate|delta|idelta)\s*\(")
"""Custom queries: the counter reads cutover makes itself from raw samples, and the functions
whose answers Prometheus extrapolates (refused anywhere else)."""
_ALL: Mapping[str, str] = {}
"""No narrowing: every child of a series."""
AnyJudge = CountJudge | CalibrationJudge | InputDriftJudge | AttributionShiftJudge
Update = Callable[[AnyJudge], None]
"""One metric's interval, ready to apply to (a copy of) its judge."""

assert LOW_CONFIDENCE in CONFIDENCE_BUCKETS


@dataclass(frozen=True)
class Arms:
    """The revisions compared: the candidate, and the stable or fresh-baseline revision."""

    candidate: str
    baseline: str


@dataclass(frozen=True)
class Result:
    """One tick's verdict, reason and evidence."""

    time: float
    verdict: Verdict
    reason: str
    evidence: tuple[Evidence, ...] = ()
    consecutive_errors: int = 0

    def status(self) -> AnalysisStatus:
        """The result as ModelDeployment ``status.lastAnalysis``."""
        return AnalysisStatus(
            time=datetime.fromtimestamp(self.time, UTC),
            verdict=self.verdict,
            reason=self.reason,
            # Evidence carries the API's fields plus `critical`, which the decision rule uses.
            metrics=[
                MetricEvidence(**{k: v for k, v in asdict(ev).items() if k != "critical"}, p_value=ev.p_value)
                for ev in self.evidence
            ],
        )


@dataclass
class _Tick:
    """Queries of one tick, each made once however many metrics need it."""

    provider: MetricProvider
    start: float
    end: float
    cache: dict[tuple[str, tuple[str, ...]], dict[Labels, float]] = field(default_factory=dict)

    async def increments(self, selector: str, by: tuple[str, ...]) -> dict[Labels, float]:
        key = (selector, by)
        if key not in self.cache:
            self.cache[key] = dict(await self.provider.increments(selector, by, self.start, self.end))
        return self.cache[key]


def as_count(value: float, what: str, *, hint: str = "") -> float:
    """``value`` as a count of events or trials: whole, finite, non-negative, at most 2**53.

    Raises :class:`MetricsUnavailable` naming ``what`` and the value otherwise (``hint`` is added
    to the message of a fractional value). Float noise of a summed count (1e-6) is rounded away."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MetricsUnavailable(f"{what} is {value!r}, not a number") from None
    if math.isnan(x):
        problem = "NaN (no defined value)"
    elif math.isinf(x):
        problem = f"{x} (infinite)"
    elif x < 0:
        problem = f"{x:g}, negative"
    elif x > MAX_COUNT:
        problem = f"{x:g}, beyond any real count (2**53)"
    elif not math.isclose(x, round(x), rel_tol=0.0, abs_tol=1e-6):
        problem = f"{x:g}, not a whole count" + (f"; {hint}" if hint else "")
    else:
        return float(round(x))
    raise MetricsUnavailable(f"{what} is {problem}")


def as_amount(value: float, what: str) -> float:
    """``value`` as a summed amount (a counter of probabilities): finite, non-negative, at most
    2**53. Raises :class:`MetricsUnavailable` naming ``what`` and the value otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MetricsUnavailable(f"{what} is {value!r}, not a number") from None
    if not math.isfinite(x) or x < 0 or x > MAX_COUNT:
        raise MetricsUnavailable(f"{what} is {x:g}, not a finite non-negative amount")
    return x


def _revision(labels: Labels) -> str:
    return dict(labels).get("revision", "")


class Analysis:
    """Sequential analysis of one rollout: candidate against baseline, metric by metric."""

    def __init__(
        self,
        spec: AnalysisSpec,
        *,
        namespace: str,
        model: str,
        arms: Arms,
        started_at: float,
        request_source: RequestSource = "gateway",
        low_confidence: float = LOW_CONFIDENCE,
    ) -> None:
        self.spec, self.namespace, self.model, self.arms = spec, namespace, model, arms
        self.started_at = started_at
        self.last_tick = started_at
        self.request_source: RequestSource = request_source
        self.low_confidence = low_confidence
        self.consecutive_errors = 0
        for metric in spec.metrics:  # a template error is a spec error: say so before any query
            if metric.prometheus is not None:
                variables = dict.fromkeys(("model", "namespace", "revision", "interval"), "x")
                render(metric.prometheus.events, variables)
                render(metric.prometheus.total, variables)
        share = spec.alpha / len(spec.metrics)
        self.judges = {m.name: self._judge(m, share, low_confidence) for m in spec.metrics}

    def _judge(self, metric: MetricSpec, share: float, low_confidence: float) -> AnyJudge:
        limits = metric.threshold_range
        settings = JudgeSettings(
            alpha=self.spec.alpha,
            alpha_share=share,
            failure_margin=metric.failure_margin,
            pass_margin=metric.pass_margin,
            direction=metric.direction,
            critical=metric.critical,
            threshold_min=limits.min if limits else None,
            threshold_max=limits.max if limits else None,
            failure_margin_absolute=metric.failure_margin_absolute,
            pass_margin_absolute=metric.pass_margin_absolute,
            dispersion=metric.dispersion,
        )
        if metric.builtin == "latency":
            assert metric.latency_threshold is not None
            return LatencyJudge(metric.name, settings, threshold_seconds=seconds(metric.latency_threshold))
        if metric.builtin == "predictionConfidence":
            return ConfidenceJudge(metric.name, settings, low_confidence=low_confidence)
        if metric.builtin == "calibrationError":
            return CalibrationJudge(metric.name, settings)
        if metric.builtin == "inputDrift":
            return InputDriftJudge(metric.name, settings)
        if metric.builtin == "attributionShift":
            return AttributionShiftJudge(metric.name, settings)
        what = {
            "errorRate": "errors",
            "outOfDistributionRate": "out-of-distribution predictions",
            "safetyViolations": "safety violations",
            "accuracy": "wrong answers",
        }.get(metric.builtin or "", "events")
        return CountJudge(metric.name, settings, what=what)

    def _selector(self, series: Series, arms: Arms, only: Mapping[str, str]) -> str:
        if not series.exported_by:
            raise MetricsUnavailable(f"{series.sample} is exported by no component: {series.not_exported}")
        revisions = "|".join(sorted({arms.candidate, arms.baseline}))
        extra = "".join(f',{name}="{value}"' for name, value in only.items())
        return f'{series.sample}{{namespace="{self.namespace}",model="{self.model}",revision=~"{revisions}"{extra}}}'

    async def _read(
        self,
        tick: _Tick,
        series: Series,
        arms: Arms,
        by: tuple[str, ...],
        only: Mapping[str, str] = _ALL,
        *,
        whole: bool = True,
        required: tuple[str, ...] | None = None,
    ) -> dict[Labels, float]:
        """One series' increments by ``by`` (which starts with revision), every value checked to
        be a count (an amount, finite and non-negative, when not ``whole``) and each revision of
        ``required`` (default: both arms) required to have a series. ``only`` narrows the
        selection to the children with those label values (for example the safety series'
        ``scope``)."""
        values = await tick.increments(self._selector(series, arms, only), by)
        checked = {}
        for labels, value in values.items():
            where = ", ".join(f'{k}="{v}"' for k, v in labels)
            what = f"the increment of {series.sample}{{{where}}}"
            checked[labels] = as_count(value, what) if whole else as_amount(value, what)
        for revision in (arms.candidate, arms.baseline) if required is None else required:
            if not any(_revision(labels) == revision for labels in checked):
                which = "".join(f' with {name}="{value}"' for name, value in only.items())
                why = f" ({series.absent_when})" if series.absent_when else ""
                raise MetricsUnavailable(f"no samples of {series.sample}{which} for revision {revision}{why}")
        return checked

    async def _errors(self, tick: _Tick, arms: Arms) -> tuple[Counts, Counts]:
        """5xx answers out of all answers, from the request counter's ``code`` label."""
        by_code = await self._read(tick, REQUESTS[self.request_source], arms, ("revision", "code"))
        out = []
        for revision in (arms.candidate, arms.baseline):
            mine = {labels: v for labels, v in by_code.items() if _revision(labels) == revision}
            errors = sum(v for labels, v in mine.items() if dict(labels).get("code", "").startswith("5"))
            out.append(Counts(errors, sum(mine.values())))
        return out[0], out[1]

    async def _counts(
        self, tick: _Tick, events: Series, trials: Series, arms: Arms, only: Mapping[str, str] = _ALL
    ) -> tuple[Counts, Counts]:
        """Events out of trials from two counters, each summed over its children with the label
        values ``only``. Events above trials are capped: serving scores a row for
        out-of-distribution before the model answers, so a failed call's rows count as events
        without a prediction."""
        hits = await self._read(tick, events, arms, ("revision",), only)
        total = await self._read(tick, trials, arms, ("revision",), only)
        out = []
        for revision in (arms.candidate, arms.baseline):
            key = (("revision", revision),)
            out.append(Counts(min(hits[key], total[key]), total[key]))
        return out[0], out[1]

    async def _wrong(self, tick: _Tick, arms: Arms) -> tuple[Counts, Counts]:
        """Fed-back rows the revision got wrong, out of all fed-back rows."""
        by_outcome = await self._read(tick, FEEDBACK, arms, ("revision", "outcome"))
        out = []
        for revision in (arms.candidate, arms.baseline):
            mine = {dict(labels).get("outcome"): v for labels, v in by_outcome.items() if _revision(labels) == revision}
            out.append(Counts(mine.get("incorrect", 0.0), sum(mine.values())))
        return out[0], out[1]

    async def _calibration(self, tick: _Tick, arms: Arms) -> tuple[Bins, Bins]:
        """Each arm's fed-back rows, right ones and summed confidence per probability bin."""
        alone = (arms.candidate,)  # JUDGED_ALONE: a baseline answering without probabilities has no bins
        rows = await self._read(tick, FEEDBACK_BY_CONFIDENCE, arms, ("revision", "bucket", "outcome"), required=alone)
        sums = await self._read(tick, FEEDBACK_CONFIDENCE, arms, ("revision", "bucket"), whole=False, required=alone)
        out = []
        for revision in (arms.candidate, arms.baseline):
            bins: dict[str, list[float]] = {}
            for labels, value in rows.items():
                found = dict(labels)
                if found.get("revision") == revision:
                    counts = bins.setdefault(found.get("bucket", ""), [0.0, 0.0, 0.0])
                    counts[0] += value
                    counts[1] += value if found.get("outcome") == "correct" else 0.0
            for labels, value in sums.items():
                found = dict(labels)
                if found.get("revision") == revision:
                    bins.setdefault(found.get("bucket", ""), [0.0, 0.0, 0.0])[2] += value
            out.append(Bins(tuple((b, n, right, confidence) for b, (n, right, confidence) in sorted(bins.items()))))
        return out[0], out[1]

    async def _top_features(self, tick: _Tick, arms: Arms) -> tuple[dict[str, float], dict[str, float]]:
        """Each arm's explained rows by their most attributed feature over the interval; both
        arms must export them (stable is the reference)."""
        rows = await self._read(tick, ATTRIBUTION_TOP_FEATURE, arms, ("revision", "feature"))
        out: tuple[dict[str, float], dict[str, float]] = ({}, {})
        for labels, value in rows.items():
            found = dict(labels)
            for arm, revision in zip(out, (arms.candidate, arms.baseline), strict=True):
                if found.get("revision") == revision:
                    arm[found.get("feature", "")] = arm.get(found.get("feature", ""), 0.0) + value
        return out

    async def _features(self, tick: _Tick, arms: Arms) -> tuple[FeatureCounts, FeatureCounts]:
        """Each arm's rows per feature and bin over the interval, and its training shares (read
        at the interval's end); every feature's bins numbered 0 to bins - 1 in both. Only the
        candidate must have them: it is judged against its own training data, and the baseline
        is only reported beside it, so a baseline whose statistics have no histograms (one
        deployed before they were added) reads as no feature, not as missing data that would
        hold the rollout at unavailable."""
        rows = await self._read(
            tick, INPUT_FEATURE_ROWS, arms, ("revision", "feature", "bin"), required=(arms.candidate,)
        )
        shares = await tick.provider.instant(self._selector(INPUT_FEATURE_REFERENCE, arms, _ALL), tick.end)
        out = []
        for revision in (arms.candidate, arms.baseline):
            counted = _per_feature(rows, revision, lambda value, what: value)
            reference = _per_feature(
                shares, revision, lambda value, what: as_amount(value, f"the training share {what}")
            )
            if not reference and revision == arms.candidate:
                why = INPUT_FEATURE_REFERENCE.absent_when
                raise MetricsUnavailable(
                    f"no samples of {INPUT_FEATURE_REFERENCE.sample} for revision {revision} ({why})"
                )
            for feature, bins in counted.items():
                if sorted(bins) != list(range(len(bins))) or sorted(reference.get(feature, {})) != sorted(bins):
                    raise MetricsUnavailable(
                        f"{INPUT_FEATURE_ROWS.sample} of revision {revision}: feature {feature!r} has bins "
                        f"{sorted(bins)} and training shares for {sorted(reference.get(feature, {}))}"
                    )
            ordered = {feature: sorted(bins) for feature, bins in counted.items()}
            out.append(
                FeatureCounts(
                    {feature: tuple(counted[feature][i] for i in bins) for feature, bins in ordered.items()},
                    {feature: tuple(reference[feature][i] for i in bins) for feature, bins in ordered.items()},
                )
            )
        return out[0], out[1]

    async def _histograms(self, tick: _Tick, series: Series, arms: Arms) -> tuple[Histogram, Histogram]:
        """Each arm's cumulative bucket counts over the interval; both arms on the same edges,
        with a +Inf bucket, never decreasing with ``le``."""
        by_le = await self._read(tick, series, arms, ("revision", "le"))
        out = []
        for revision in (arms.candidate, arms.baseline):
            where = f"{series.sample} of revision {revision}"
            rows = []
            for labels, value in by_le.items():
                if _revision(labels) != revision:
                    continue
                le = dict(labels).get("le", "")
                try:
                    edge = float(le)
                except ValueError:
                    raise MetricsUnavailable(f"{where} has a bucket le={le!r}, not a number") from None
                if math.isnan(edge):
                    raise MetricsUnavailable(f"{where} has a bucket le=NaN")
                rows.append((edge, value))
            rows.sort()
            if not rows or rows[-1][0] != math.inf:
                raise MetricsUnavailable(f"{where} has no +Inf bucket")
            cumulative = [v for _, v in rows]
            if any(b < a for a, b in pairwise(cumulative)):
                raise MetricsUnavailable(
                    f"{where}: cumulative bucket counts {cumulative} decrease with le (a counter reset seen in "
                    "one bucket and missed in another?)"
                )
            out.append(Histogram(tuple(edge for edge, _ in rows[:-1]), tuple(cumulative)))
        candidate, baseline = out
        if candidate.edges != baseline.edges:
            raise MetricsUnavailable(
                f"{series.sample}: the arms have different bucket edges ({list(candidate.edges)} and "
                f"{list(baseline.edges)})"
            )
        return candidate, baseline

    async def _custom_part(self, tick: _Tick, query: str, part: str, what: str) -> float:
        """One custom query's count for one revision. A counter read (``sum(increase(s[...]))``,
        optionally in ``round()``, or the selector ``s`` alone) is read as the builtins are, from
        raw samples; any other use of an extrapolating function is refused; anything else is an
        instant query whose answer must already be a count."""
        zero = bool(_OR_ZERO.search(query))
        body = _OR_ZERO.sub("", query).strip()
        outer = _ROUND.fullmatch(body)
        body = outer.group(1).strip() if outer else body
        counter = _SUM_INCREASE.fullmatch(body) or _SELECTOR.fullmatch(body)
        if counter is not None:
            values = await tick.increments(counter.group("selector"), ())
            if not values:
                if zero and part == "events":
                    return 0.0
                raise MetricsUnavailable(
                    f"{what} read no sample of {counter.group('selector')} inside the {tick.end - tick.start:g}s "
                    "interval: no series matched (a label typo, an exporter not deployed), or it is scraped less "
                    "often than analysis.interval; scrape at least twice per interval"
                    + ("" if part == "total" else ", or end the query with `or vector(0)` if absence means none")
                )
            return as_count(sum(values.values()), f"{what} read a value that")
        extrapolating = _EXTRAPOLATING.search(query)
        if extrapolating:
            raise MetricsUnavailable(
                f"{what} uses {extrapolating.group(1)}(), which Prometheus extrapolates to the window's edges (at "
                "a 15s scrape a 30s window counts each request about twice): write sum(increase(<counter "
                "selector>[{{interval}}])) alone, or the counter selector itself, and cutover reads its raw samples"
            )
        vector = await tick.provider.instant(query, tick.end)
        if not vector:
            absent = (
                "no series matched (a label typo, or the exporter is not deployed)"
                if part == "total"
                else "no series matched; if that means no event yet, end the query with `or vector(0)`"
            )
            raise MetricsUnavailable(f"{what} returned nothing: {absent}")
        hint = "a counter's growth is read as sum(increase(<selector>[{{interval}}])), from raw samples"
        counts = [as_count(v, f"{what} returned a value that", hint=hint) for v in vector.values()]
        return as_count(sum(counts), f"{what} sums to a value that")

    async def _custom(self, tick: _Tick, metric: MetricSpec) -> tuple[Counts, Counts]:
        assert metric.prometheus is not None
        queries = {"events": metric.prometheus.events, "total": metric.prometheus.total}
        arms = []
        for revision in (self.arms.candidate, self.arms.baseline):
            variables = {
                "model": self.model,
                "namespace": self.namespace,
                "revision": revision,
                "interval": f"{max(1, round(tick.end - tick.start))}s",
            }
            read = {}
            for part, template in queries.items():
                what = f"metric {metric.name}: the {part} query for revision {revision}"
                read[part] = await self._custom_part(tick, render(template, variables), part, what)
            if read["events"] > read["total"]:
                raise MetricsUnavailable(
                    f"metric {metric.name}: revision {revision} has {read['events']:g} events out of "
                    f"{read['total']:g} trials; events must count a subset of total"
                )
            arms.append(Counts(read["events"], read["total"]))
        return arms[0], arms[1]

    async def _fetch(self, tick: _Tick, metric: MetricSpec) -> Update:
        """Read and check one metric's interval; return the update to apply once every read
        succeeded. Raises :class:`MetricsUnavailable` for anything that is not usable data."""
        arms = self.arms
        if metric.prometheus is not None:
            counts = await self._custom(tick, metric)
        elif metric.builtin == "errorRate":
            counts = await self._errors(tick, arms)
        elif metric.builtin == "latency":
            assert metric.latency_threshold is not None
            histograms = await self._histograms(tick, REQUEST_DURATION[self.request_source], arms)
            _require_edge(histograms[0], seconds(metric.latency_threshold), f"latencyThreshold of {metric.name}")
            return lambda judge: _histogram_judge(judge).update_histograms(*histograms)
        elif metric.builtin == "predictionConfidence":
            histograms = await self._histograms(tick, PREDICTION_CONFIDENCE, arms)
            _require_edge(histograms[0], self.low_confidence, f"low-confidence threshold of {metric.name}")
            return lambda judge: _histogram_judge(judge).update_histograms(*histograms)
        elif metric.builtin == "outOfDistributionRate":
            counts = await self._counts(tick, OUT_OF_DISTRIBUTION, PREDICTIONS, arms)
        elif metric.builtin == "accuracy":
            counts = await self._wrong(tick, arms)
        elif metric.builtin == "calibrationError":
            bins = await self._calibration(tick, arms)
            return lambda judge: _calibration_judge(judge).update_bins(*bins)
        elif metric.builtin == "inputDrift":
            features = await self._features(tick, arms)
            return lambda judge: _drift_judge(judge).update_features(*features)
        elif metric.builtin == "attributionShift":
            tops = await self._top_features(tick, arms)
            return lambda judge: _attribution_judge(judge).update_top_features(*tops)
        else:
            counts = await self._counts(tick, SAFETY_VIOLATIONS, SAFETY_CHECKS, arms, {"scope": SAFETY_SCOPE})
        return lambda judge: _count_judge(judge).update(*counts)

    async def tick(self, provider: MetricProvider, now: float) -> Result:
        """Read the interval since the last successful tick and decide.

        All or nothing, and it never raises on what the provider returns: when any metric
        cannot be read or holds a value that is not a count, the verdict is ``unavailable``
        with the reason, nothing is updated, and the next successful tick covers the whole gap,
        so an outage never resets, skews or double-counts the evidence."""
        tick = _Tick(provider, self.last_tick, now)
        try:
            updates = [(metric.name, await self._fetch(tick, metric)) for metric in self.spec.metrics]
            staged = copy.deepcopy(self.judges)
            for name, update in updates:
                try:
                    update(staged[name])
                except (ValueError, ArithmeticError) as err:  # the checks above should make this unreachable
                    raise MetricsUnavailable(f"metric {name}: values refused by its test: {err}") from err
        except MetricsUnavailable as err:
            self.consecutive_errors += 1
            return Result(now, "unavailable", f"metrics unavailable: {err}", consecutive_errors=self.consecutive_errors)
        self.judges = staged
        self.consecutive_errors = 0
        self.last_tick = now
        return self.judge(now)

    def judge(self, now: float) -> Result:
        """The verdict from the evidence so far (no queries)."""
        metrics = {m.name: m for m in self.spec.metrics}
        evidence = [j.evidence(metrics[name].min_samples or self.spec.min_samples) for name, j in self.judges.items()]
        samples_met = all(
            e.candidate_samples >= (metrics[e.name].min_samples or self.spec.min_samples)
            and (
                metrics[e.name].builtin in JUDGED_ALONE
                or e.baseline_samples >= (metrics[e.name].min_samples or self.spec.min_samples)
            )
            for e in evidence
        )
        duration_met = now - self.started_at >= seconds(self.spec.min_duration)
        verdict, reason = decide(evidence, min_samples_met=samples_met, min_duration_met=duration_met)
        return Result(now, verdict, reason, tuple(evidence))

    async def catch_up(self, provider: MetricProvider, now: float) -> Result | None:
        """Replay every whole interval from the last tick up to ``now`` (after an operator
        restart the evidence is rebuilt from Prometheus' history, exactly as it was)."""
        step = seconds(self.spec.interval)
        result = None
        while self.last_tick + step <= now:
            result = await self.tick(provider, self.last_tick + step)
            if result.verdict == "unavailable":
                break
        return result


def _per_feature(
    values: Mapping[Labels, float], revision: str, check: Callable[[float, str], float]
) -> dict[str, dict[int, float]]:
    """``revision``'s values by feature and bin index, each passed through ``check`` (given the
    value and where it was read). Raises :class:`MetricsUnavailable` for a bin that is no index."""
    table: dict[str, dict[int, float]] = {}
    for labels, value in values.items():
        found = dict(labels)
        if found.get("revision") != revision:
            continue
        where = f'of revision {revision}, feature "{found.get("feature", "")}", bin "{found.get("bin", "")}"'
        try:
            index = int(found.get("bin", ""))
        except ValueError:
            raise MetricsUnavailable(f"input drift series {where}: the bin is not an index") from None
        table.setdefault(found.get("feature", ""), {})[index] = check(value, where)
    return table


def _attribution_judge(judge: AnyJudge) -> AttributionShiftJudge:
    assert isinstance(judge, AttributionShiftJudge)
    return judge


def _drift_judge(judge: AnyJudge) -> InputDriftJudge:
    assert isinstance(judge, InputDriftJudge)
    return judge


def _calibration_judge(judge: AnyJudge) -> CalibrationJudge:
    assert isinstance(judge, CalibrationJudge)
    return judge


def _count_judge(judge: AnyJudge) -> CountJudge:
    assert isinstance(judge, CountJudge)
    return judge


def _histogram_judge(judge: AnyJudge) -> LatencyJudge | ConfidenceJudge:
    assert isinstance(judge, LatencyJudge | ConfidenceJudge)
    return judge


def _require_edge(histogram: Histogram, edge: float, what: str) -> None:
    """A histogram judge reads events above one bucket edge: without that edge nothing can be
    judged, which is missing data (``unavailable``), not too little of it."""
    if not np.isclose(np.asarray(histogram.edges, float), edge).any():
        raise MetricsUnavailable(f"the {what} ({edge:g}s) is not a bucket edge of the histogram read {histogram.edges}")


@dataclass(frozen=True)
class WatchResult:
    """One post-promotion check: whether any watched rate has risen, and the statistics."""

    time: float
    alarm: bool
    reason: str
    statistics: dict[str, float] = field(default_factory=dict)


class PostPromotionWatch:
    """CUSUM on a promoted revision's error rate and slow-request rate against the rates it
    showed during its rollout. Alerting (AlertRule) and automatic rollback read :meth:`tick`."""

    def __init__(self, analysis: Analysis, *, started_at: float, shift: float = 2.0, h: float = math.log(1000)) -> None:
        self.analysis = analysis
        self.revision = analysis.arms.candidate
        self.last_tick = started_at
        self.watches: dict[str, BinomialCusum] = {}
        for metric in analysis.spec.metrics:
            judge = analysis.judges[metric.name]
            if not isinstance(judge, CountJudge) or metric.builtin not in ("errorRate", "latency"):
                continue
            if not judge.test.candidate_trials:
                continue
            trials = float(judge.test.candidate_trials)
            # Half an event of prior keeps a clean rollout from setting p0 = 0 (no alarm possible).
            p0 = (float(judge.test.candidate_events) + 0.5) / (trials + 1.0)
            self.watches[metric.name] = BinomialCusum(p0=p0, shift=shift, h=h)

    async def tick(self, provider: MetricProvider, now: float) -> WatchResult:
        analysis, metrics = self.analysis, {m.name: m for m in self.analysis.spec.metrics}
        tick = _Tick(provider, self.last_tick, now)
        arms = Arms(self.revision, self.revision)
        try:
            observed = {}
            for name in self.watches:
                metric = metrics[name]
                if metric.builtin == "errorRate":
                    counts, _ = await analysis._errors(tick, arms)
                else:
                    assert metric.latency_threshold is not None
                    series = REQUEST_DURATION[analysis.request_source]
                    histogram, _ = await analysis._histograms(tick, series, arms)
                    events, trials = exceedances(
                        histogram.edges, histogram.cumulative, seconds(metric.latency_threshold)
                    )
                    counts = Counts(float(events), float(trials))
                observed[name] = counts
        except (MetricsUnavailable, ValueError) as err:
            return WatchResult(now, False, f"metrics unavailable: {err}")
        self.last_tick = now
        for name, counts in observed.items():
            self.watches[name].update(counts.events, counts.trials)
        risen = [n for n, w in self.watches.items() if bool(w.alarmed)]
        stats = {n: float(w.statistic) for n, w in self.watches.items()}
        if risen:
            detail = ", ".join(
                f"{n} above {self.watches[n].p0:.3g} (CUSUM {stats[n]:.1f} >= {self.watches[n].h:.1f})" for n in risen
            )
            return WatchResult(now, True, f"revision {self.revision} has regressed since promotion: {detail}", stats)
        return WatchResult(now, False, "no rise since promotion", stats)
