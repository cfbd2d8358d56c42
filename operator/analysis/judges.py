"""Per-metric judges and the decision rule that turns their evidence into a verdict.

A judge owns the sequential tests of one metric, takes one interval of data at a time, and
says ``fail`` (proven worse than the failure margin), ``pass`` (proven within the pass margin),
``continue`` (not proven either way) or ``inconclusive`` (too little data to judge yet).

:func:`decide` combines them:

* a failing ``critical`` metric rolls back at once, however little data there is: the tests are
  valid at every sample size, so early evidence is real evidence;
* a failing non-critical metric rolls back once the minimum samples and time are reached;
* promotion needs every metric to pass, plus the minimum samples and time (an intersection-union
  test: each metric at the full alpha, no correction needed);
* too little data is ``inconclusive``, never a failure.

The rollback alpha is split evenly across metrics (Bonferroni, which stays valid under
continuous monitoring because each test is anytime-valid), so the chance that any metric ever
rolls back a candidate that is not worse stays below ``analysis.alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from cutover.api.contract import interval_text
from cutover.api.v1alpha1.modeldeployment import Verdict

from .counts import Direction, Dispersion, RateRatioTest
from .histograms import BucketShiftTest, QuantileBand, QuantileBounds, bucket_counts, exceedances

Decision = Literal["pass", "fail", "continue", "inconclusive"]
PSI_PRACTICAL = 0.1
"""A bucket-distribution shift must also reach this PSI to fail: "moderate" by convention."""


@dataclass(frozen=True)
class Evidence:
    """What one metric's tests say, with the numbers behind it."""

    name: str
    decision: Decision
    reason: str
    critical: bool = False
    candidate_samples: int = 0
    baseline_samples: int = 0
    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    e_value: float | None = None
    alpha_spent: float | None = None

    @property
    def p_value(self) -> float | None:
        """Always-valid p-value of the rollback test (1 / e-value, capped at 1)."""
        return None if self.e_value is None else min(1.0, 1.0 / self.e_value) if self.e_value > 0 else 1.0


@dataclass(frozen=True)
class Counts:
    """One interval of a count metric for one arm: events out of trials."""

    events: float
    trials: float


@dataclass(frozen=True)
class Histogram:
    """One interval of a histogram for one arm: cumulative counts per finite edge, then +Inf."""

    edges: tuple[float, ...]
    cumulative: tuple[float, ...]


class Judge(Protocol):
    name: str
    critical: bool

    def evidence(self, min_samples: int) -> Evidence: ...


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _quantile_text(name: str, q: QuantileBounds) -> str:
    """Where a quantile lies, in words; an unbounded side is left out, never written as a number."""
    low, high = math.isfinite(q.lower), math.isfinite(q.upper)
    if low and high:
        return f"{name} in ({q.lower:.3g}, {q.upper:.3g}]s"
    if high:
        return f"{name} <= {q.upper:.3g}s"
    if low:
        return f"{name} > {q.lower:.3g}s"
    return f"{name} not bounded yet"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


@dataclass(frozen=True)
class JudgeSettings:
    """How one metric is judged: the analysis alpha and this metric's share of it, and the
    metric's margins (relative, and absolute in events per trial), direction, criticality,
    absolute guardrails (thresholdRange) and dispersion assumption, as in MetricSpec."""

    alpha: float
    alpha_share: float
    failure_margin: float = 0.0
    pass_margin: float = 0.2
    direction: Direction = "increase"
    critical: bool = False
    threshold_min: float | None = None
    threshold_max: float | None = None
    failure_margin_absolute: float = 0.0
    pass_margin_absolute: float = 0.0
    dispersion: Dispersion = "estimated"


class CountJudge:
    """Errors, timeouts, out-of-distribution predictions, safety violations, custom counts."""

    def __init__(self, name: str, settings: JudgeSettings, *, what: str = "events") -> None:
        self.name, self.critical, self.what = name, settings.critical, what
        self.alpha_share = settings.alpha_share
        self.margins = (settings.failure_margin, settings.pass_margin)
        self.absolute_margins = (settings.failure_margin_absolute, settings.pass_margin_absolute)
        self.threshold = (settings.threshold_min, settings.threshold_max)
        self.test = RateRatioTest(
            settings.alpha_share,
            settings.alpha,
            settings.failure_margin,
            settings.pass_margin,
            settings.direction,
            failure_margin_absolute=settings.failure_margin_absolute,
            pass_margin_absolute=settings.pass_margin_absolute,
            dispersion=settings.dispersion,
        )
        self.error: str | None = None
        """Why histogram data could not be read (a threshold that is not a bucket edge)."""

    def _exceedances(self, candidate: Histogram, baseline: Histogram, edge: float) -> tuple[float, ...] | None:
        """(events, trials) of each arm above a bucket edge; None, with the reason kept for the
        evidence, when the edge is not one of the histogram's."""
        try:
            y_c, n_c = exceedances(candidate.edges, candidate.cumulative, edge)
            y_b, n_b = exceedances(baseline.edges, baseline.cumulative, edge)
        except ValueError as err:
            self.error = str(err)
            return None
        return float(y_c), float(n_c), float(y_b), float(n_b)

    def update(self, candidate: Counts, baseline: Counts) -> None:
        self.test.update(candidate.events, candidate.trials, baseline.events, baseline.trials)

    def candidate_rate(self) -> float | None:
        n = float(self.test.candidate_trials)
        return float(self.test.candidate_events) / n if n else None

    def baseline_rate(self) -> float | None:
        n = float(self.test.baseline_trials)
        return float(self.test.baseline_events) / n if n else None

    def _limit(self, side: int) -> str:
        """The failure (0) or pass (1) limit in words: a ratio, plus the absolute margin."""
        relative, absolute = 1 + self.margins[side], self.absolute_margins[side]
        if not absolute:
            return f"{relative:.3g}x"
        return f"{relative:.3g}x baseline + {absolute:.3g} {self.what} per trial"

    def evidence(self, min_samples: int) -> Evidence:
        t = self.test
        n_c, n_b = int(t.candidate_trials), int(t.baseline_trials)
        bounds = t.bounds()
        e_value = float(np.exp(min(float(t.max_log_e_fail()), 700.0)))
        estimate, lower, upper = _finite(float(t.estimate())), _finite(bounds.lower), _finite(bounds.upper)

        def said(decision: Decision, reason: str) -> Evidence:
            return Evidence(
                self.name, decision, reason, self.critical, n_c, n_b, estimate, lower, upper, e_value, self.alpha_share
            )

        rates = (
            f"candidate {_fmt(self.candidate_rate())} vs baseline {_fmt(self.baseline_rate())} {self.what} per trial"
        )
        ratio = f"ratio {_fmt(estimate)} in {interval_text(lower, upper)}"
        spread = float(t.dispersion_factor())
        if spread > 1.05:
            ratio += f" (counts {spread:.2g}x as dispersed as binomial; evidence divided by that)"
        low, high = self.threshold
        rate = self.candidate_rate()
        outside = rate is not None and ((high is not None and rate > high) or (low is not None and rate < low))
        if outside and n_c >= min_samples:
            return said("fail", f"{rates} is outside thresholdRange {interval_text(low, high)}")
        if bool(t.failed()):
            proof = f"e-value {e_value:.3g} >= {1 / self.alpha_share:.3g}"
            return said("fail", f"{ratio}: proven above {self._limit(0)} ({rates}, {proof})")
        if min(n_c, n_b) < min_samples:
            return said("inconclusive", f"{min(n_c, n_b)} of {min_samples} trials per arm so far; {ratio}")
        if bool(t.passed()):
            return said("pass", f"{ratio}: proven below {self._limit(1)} ({rates})")
        return said("continue", f"{ratio}: not yet proven either way ({rates})")


class LatencyJudge(CountJudge):
    """Requests slower than a bucket edge, through the count test, with time-uniform quantile
    bounds (p50, p99) of each arm reported beside it."""

    def __init__(self, name: str, settings: JudgeSettings, *, threshold_seconds: float) -> None:
        super().__init__(name, settings, what="slow requests")
        self.threshold_seconds = threshold_seconds
        self.bands: tuple[QuantileBand, QuantileBand] | None = None

    def update_histograms(self, candidate: Histogram, baseline: Histogram) -> None:
        read = self._exceedances(candidate, baseline, self.threshold_seconds)
        if read is None:
            return
        y_c, n_c, y_b, n_b = read
        self.update(Counts(float(y_c), float(n_c)), Counts(float(y_b), float(n_b)))
        if self.bands is None:
            self.bands = (
                QuantileBand(candidate.edges, self.alpha_share),
                QuantileBand(baseline.edges, self.alpha_share),
            )
        self.bands[0].update(candidate.cumulative)
        self.bands[1].update(baseline.cumulative)

    def evidence(self, min_samples: int) -> Evidence:
        if self.error:
            return Evidence(self.name, "inconclusive", f"latencyThreshold: {self.error}", critical=self.critical)
        base = super().evidence(min_samples)
        if self.bands is None:
            return base
        parts = []
        for label, band in zip(("candidate", "baseline"), self.bands, strict=True):
            q = [band.quantile(p) for p in (0.5, 0.99)]
            parts.append(f"{label} {_quantile_text('p50', q[0])} {_quantile_text('p99', q[1])}")
        return replace(base, reason=f"{base.reason}; {'; '.join(parts)}")


class ConfidenceJudge(CountJudge):
    """Prediction confidence: the low-confidence fraction through the count test, and a
    two-sided test on the whole bucket distribution (with PSI as the practical threshold).
    The metric's alpha share is split between the two."""

    def __init__(self, name: str, settings: JudgeSettings, *, low_confidence: float) -> None:
        super().__init__(
            name, replace(settings, alpha_share=settings.alpha_share / 2), what="low-confidence predictions"
        )
        self.low_confidence = low_confidence
        self.shift: BucketShiftTest | None = None

    def update_histograms(self, candidate: Histogram, baseline: Histogram) -> None:
        read = self._exceedances(candidate, baseline, self.low_confidence)
        if read is None:
            return
        y_c, n_c, y_b, n_b = read
        # Events are predictions at or below the threshold: trials minus the exceedances.
        self.update(Counts(float(n_c - y_c), float(n_c)), Counts(float(n_b - y_b), float(n_b)))
        if self.shift is None:
            self.shift = BucketShiftTest(len(candidate.cumulative), self.alpha_share)
        self.shift.update(
            bucket_counts(candidate.cumulative), float(n_c), bucket_counts(baseline.cumulative), float(n_b)
        )

    def evidence(self, min_samples: int) -> Evidence:
        if self.error:
            return Evidence(self.name, "inconclusive", f"confidence threshold: {self.error}", critical=self.critical)
        base = super().evidence(min_samples)
        if self.shift is None:
            return base
        shift_e, drift = math.exp(min(self.shift.log_e(), 700.0)), self.shift.psi()
        detail = f"distribution shift e-value {shift_e:.3g}, PSI {drift:.3g}"
        if self.shift.rejected() and drift >= PSI_PRACTICAL and base.decision != "fail":
            return replace(base, decision="fail", reason=f"prediction confidence distribution shifted ({detail})")
        return replace(base, reason=f"{base.reason}; {detail}")


@dataclass(frozen=True)
class Bins:
    """One interval of ground-truth feedback for one arm, per confidence bin: (bin, rows, rows
    right, summed top-class probability of the rows)."""

    bins: tuple[tuple[str, float, float, float], ...]


def expected_calibration_error(bins: dict[str, list[float]]) -> float | None:
    """ECE = sum over bins b of (n_b / N) |acc_b - conf_b| = sum |right_b - confidence_b| / N,
    from each bin's [rows, right, summed confidence]; None without rows. Guo et al., "On
    Calibration of Modern Neural Networks" (ICML 2017), equation 3."""
    rows = sum(n for n, _, _ in bins.values())
    if rows <= 0:
        return None
    return sum(abs(right - confidence) for _, right, confidence in bins.values()) / rows


class CalibrationJudge:
    """Expected calibration error of the candidate against a limit (``thresholdRange.max``),
    from the rows given their truth so far, the baseline's reported beside it.

    A guardrail on a point estimate, not a sequential test: once the candidate has ``minSamples``
    fed-back rows with a probability it passes while its ECE is within the limit and fails above
    it, and it is re-read every interval. ECE read from a sample is biased upwards (each bin's
    |acc - conf| is positive even for a perfectly calibrated model), by about
    sqrt(2 / (pi n_b)) times the spread of a bin's accuracy; 1,000 rows over ten bins put that
    near 0.02, so a limit well above it (0.05 or more) or a larger minSamples is what makes the
    gate mean calibration rather than sample size."""

    def __init__(self, name: str, settings: JudgeSettings) -> None:
        self.name, self.critical = name, settings.critical
        self.limit = settings.threshold_max
        self.arms: tuple[dict[str, list[float]], dict[str, list[float]]] = ({}, {})

    def update_bins(self, candidate: Bins, baseline: Bins) -> None:
        for totals, read in zip(self.arms, (candidate, baseline), strict=True):
            for bucket, rows, right, confidence in read.bins:
                bin_totals = totals.setdefault(bucket, [0.0, 0.0, 0.0])
                bin_totals[0] += rows
                bin_totals[1] += right
                bin_totals[2] += confidence

    def evidence(self, min_samples: int) -> Evidence:
        n_c, n_b = (int(sum(b[0] for b in arm.values())) for arm in self.arms)
        ece_c, ece_b = (expected_calibration_error(arm) for arm in self.arms)

        def said(decision: Decision, reason: str) -> Evidence:
            return Evidence(self.name, decision, reason, self.critical, n_c, n_b, ece_c)

        errors = f"expected calibration error candidate {_fmt(ece_c)} vs baseline {_fmt(ece_b)}"
        if self.limit is None:  # the API requires thresholdRange.max for calibrationError
            return said("inconclusive", f"{errors}; no thresholdRange.max to judge it against")
        if n_c < min_samples or ece_c is None:
            return said("inconclusive", f"{n_c} of {min_samples} fed-back rows with a probability so far; {errors}")
        if ece_c > self.limit:
            return said("fail", f"{errors}: above thresholdRange.max {self.limit:.3g}")
        return said("pass", f"{errors}: within thresholdRange.max {self.limit:.3g}")


def decide(evidence: list[Evidence], *, min_samples_met: bool, min_duration_met: bool) -> tuple[Verdict, str]:
    """The verdict and its reason in words, from every metric's evidence."""
    failed = [e for e in evidence if e.decision == "fail"]
    critical = [e for e in failed if e.critical]
    warmed_up = min_samples_met and min_duration_met
    if critical:
        return "rollback", "; ".join(f"critical metric {e.name} failed: {e.reason}" for e in critical)
    if failed and warmed_up:
        return "rollback", "; ".join(f"metric {e.name} failed: {e.reason}" for e in failed)
    if failed:
        names = ", ".join(e.name for e in failed)
        return "continue", f"{names} failing; waiting for the minimum samples and time before rolling back"
    waiting = [e for e in evidence if e.decision == "inconclusive"]
    if waiting or not min_samples_met:
        names = ", ".join(e.name for e in waiting) or "all metrics"
        return "inconclusive", f"too little data yet for {names}"
    if all(e.decision == "pass" for e in evidence):
        if not min_duration_met:
            return "continue", "every metric passes; waiting for analysis.minDuration"
        return "promote", "every metric is proven within its pass margin"
    pending = ", ".join(e.name for e in evidence if e.decision != "pass")
    return "continue", f"not yet proven within the pass margin: {pending}"
