"""Tests on Prometheus histogram buckets: latency and prediction confidence.

Only bucket counts exist, so everything here works on the counts per bucket edge:

* :func:`exceedances` turns a latency histogram into "requests slower than x" counts, which go
  through the count test (:class:`~cutover.analysis.counts.RateRatioTest`). This is the most
  powerful way to catch tail regressions and gives an interpretable effect (the ratio of
  slow-request rates).
* :class:`QuantileBand` is the time-uniform DKW band of Howard & Ramdas (Bernoulli 2022): a
  confidence band for the whole CDF that holds at every sample size simultaneously, so the
  quantile bounds it yields may be read after every interval. It is exact at the bucket edges.
* :class:`BucketShiftTest` is a two-sided anytime-valid test that the two arms share one bucket
  distribution, for prediction confidence: within each bucket, an event belongs to the
  candidate with probability rho_t under the null, and the product of the per-bucket mixture
  e-processes is an e-process because every request falls in exactly one bucket.
* :func:`psi` is the population stability index (Jeffreys divergence), the effect size that
  keeps a tiny but significant shift from rolling anything back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp  # type: ignore[import-untyped]  # scipy ships no stubs

FloatArray = NDArray[np.float64]

TWO_SIDED_GRID = 0.05 * np.arange(-60, 61)
_LOG_W2 = -0.5 * TWO_SIDED_GRID**2
TWO_SIDED_LOG_WEIGHTS = _LOG_W2 - logsumexp(_LOG_W2)
_ZERO = 60  # index of delta = 0 in TWO_SIDED_GRID


def bucket_counts(cumulative: ArrayLike) -> FloatArray:
    """Per-bucket counts from cumulative ``_bucket{le}`` counts (the last one being +Inf)."""
    c = np.asarray(cumulative, float)
    out: FloatArray = np.diff(c, prepend=0.0, axis=-1)
    return out


def exceedances(edges: ArrayLike, cumulative: ArrayLike, threshold: float) -> tuple[FloatArray, FloatArray]:
    """(events, trials): observations above ``threshold`` and all observations.

    ``threshold`` must be one of the finite bucket edges; anything else would need
    interpolation inside a bucket, which histograms cannot support."""
    e = np.asarray(edges, float)
    c = np.asarray(cumulative, float)
    (matches,) = np.nonzero(np.isclose(e, threshold))
    if len(matches) == 0:
        raise ValueError(f"{threshold} is not a bucket edge of this histogram (edges: {e.tolist()})")
    total = c[..., -1]
    return total - c[..., matches[0]], total


def dkw_epsilon(n: ArrayLike, alpha: float) -> FloatArray:
    """Half-width of the time-uniform DKW band after n observations (Howard & Ramdas 2022,
    closed form): valid for all n at once, about twice the fixed-n DKW width."""
    t = np.maximum(np.asarray(n, float), 1.0)
    out: FloatArray = 0.85 * np.sqrt((np.log(np.log(math.e * t)) + 0.8 * np.log(1612 / alpha)) / t)
    return out


@dataclass(frozen=True)
class QuantileBounds:
    """Bounds on one quantile, on bucket edges: the quantile lies in (lower, upper]."""

    quantile: float
    lower: float
    upper: float


class QuantileBand:
    """Anytime-valid confidence band for a CDF observed through cumulative bucket counts."""

    def __init__(self, edges: ArrayLike, alpha: float) -> None:
        self.edges = np.asarray(edges, float)
        if np.any(np.diff(self.edges) <= 0):
            raise ValueError("bucket edges must increase")
        self.alpha = alpha
        self.cumulative = np.zeros(len(self.edges) + 1)  # the last bucket is +Inf

    def update(self, cumulative_increment: ArrayLike) -> None:
        """Add one interval's cumulative bucket counts (finite edges then +Inf)."""
        inc = np.asarray(cumulative_increment, float)
        if inc.shape != self.cumulative.shape or np.any(np.diff(inc) < 0):
            raise ValueError("cumulative bucket counts must have one entry per edge plus +Inf and not decrease")
        self.cumulative += inc

    @property
    def count(self) -> float:
        return float(self.cumulative[-1])

    def cdf(self) -> FloatArray:
        """Empirical CDF at the finite edges."""
        out: FloatArray = self.cumulative[:-1] / max(self.count, 1.0)
        return out

    def epsilon(self) -> float:
        return float(dkw_epsilon(self.count, self.alpha))

    def quantile(self, q: float) -> QuantileBounds:
        """Bounds on the q-quantile: upper is the first edge where the CDF's lower band reaches
        q; lower the last edge where its upper band is still below q (-inf / +inf when the band
        is too wide to say)."""
        if self.count == 0:
            return QuantileBounds(q, -math.inf, math.inf)
        cdf, eps = self.cdf(), self.epsilon()
        above = np.nonzero(cdf - eps >= q)[0]
        below = np.nonzero(cdf + eps < q)[0]
        upper = float(self.edges[above[0]]) if len(above) else math.inf
        lower = float(self.edges[below[-1]]) if len(below) else -math.inf
        return QuantileBounds(q, lower, upper)


def stochastically_larger(candidate: QuantileBand, baseline: QuantileBand) -> bool:
    """Whether the candidate is proven stochastically larger (slower) than the baseline: the
    baseline's CDF exceeds the candidate's at some edge by more than both bands together."""
    if candidate.count == 0 or baseline.count == 0:
        return False
    gap = float(np.max(baseline.cdf() - candidate.cdf()))
    return gap > candidate.epsilon() + baseline.epsilon()


def psi(candidate_counts: ArrayLike, baseline_counts: ArrayLike, smoothing: float = 0.5) -> float:
    """Population stability index between two bucket distributions (empty bins smoothed)."""
    a = np.asarray(candidate_counts, float) + smoothing
    b = np.asarray(baseline_counts, float) + smoothing
    a, b = a / a.sum(), b / b.sum()
    return float(np.sum((a - b) * np.log(a / b)))


class BucketShiftTest:
    """Two-sided anytime-valid test that candidate and baseline share one bucket distribution.

    Per bucket k and interval t, conditional on the bucket's events, the candidate's share is
    rho_t under the null (rho_t from the trial counts); each bucket keeps a two-sided normal
    mixture over its own log ratio, and the product over buckets is the e-process. Trials are
    the requests of each arm; a bucket's events are its predictions."""

    def __init__(self, buckets: int, alpha: float) -> None:
        self.alpha = alpha
        self.loglik = np.zeros((buckets, len(TWO_SIDED_GRID)))
        self.candidate = np.zeros(buckets)
        self.baseline = np.zeros(buckets)

    def update(
        self, candidate_buckets: ArrayLike, candidate_trials: float, baseline_buckets: ArrayLike, baseline_trials: float
    ) -> None:
        y_c = np.asarray(candidate_buckets, float)
        y_b = np.asarray(baseline_buckets, float)
        total = candidate_trials + baseline_trials
        self.candidate += y_c
        self.baseline += y_b
        if candidate_trials <= 0 or baseline_trials <= 0:
            return
        rho = candidate_trials / total
        log_norm = np.logaddexp(math.log(rho) + TWO_SIDED_GRID, math.log1p(-rho))
        self.loglik += y_c[:, None] * (math.log(rho) + TWO_SIDED_GRID - log_norm)
        self.loglik += y_b[:, None] * (math.log1p(-rho) - log_norm)

    def log_e(self) -> float:
        per_bucket = logsumexp(self.loglik - self.loglik[:, _ZERO, None] + TWO_SIDED_LOG_WEIGHTS, axis=-1)
        return float(np.sum(per_bucket))

    def rejected(self) -> bool:
        return self.log_e() >= math.log(1 / self.alpha)

    def psi(self) -> float:
        return psi(self.candidate, self.baseline)
