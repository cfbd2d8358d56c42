"""Anytime-valid comparison of event rates between a candidate and a baseline.

Events are errors, timeouts, safety violations, slow requests — anything counted out of
trials (requests). Each interval t contributes candidate and baseline counts; conditional on an
event happening in interval t, it belongs to the candidate with probability

    theta_t(delta) = rho_t * e^delta / (rho_t * e^delta + 1 - rho_t),   rho_t = n_c / (n_c + n_b)

where delta is the log ratio of the candidate's event rate to the baseline's. Using each
interval's own traffic share rho_t (measured from the trial counts, not the configured weight)
stratifies the test: traffic ramps and error bursts that hit both arms alike cancel out, which
a pooled test gets badly wrong (Simpson's paradox). The null distribution of a common
time-varying rate drops out entirely.

The log-likelihood ``l(delta) = sum_t y_c log theta_t + y_b log(1 - theta_t)`` is kept on a grid
of delta values and updated in O(grid) per interval. Against a one-sided null ``delta <= d0``,
the mixture ``E = sum_g w_g exp(l(d0 + g) - l(d0))`` over alternatives ``g > 0`` (half-normal
weights) is a nonnegative supermartingale for every delta in the null, so by Ville's inequality
``P(E ever reaches 1/alpha) <= alpha``: the test may be checked after every interval, forever.
Reversing the sign gives the test of ``delta >= d0`` used for promotion. Inverting the tests at
every grid point gives a confidence sequence for the rate ratio.

See Lindon & Malek (NeurIPS 2022) for the multinomial construction; the stratified form and its
validity argument are in docs/analysis.md.

Everything accepts a leading batch shape, so the benchmark drives many simulated rollouts with
exactly this code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp  # type: ignore[import-untyped]  # scipy ships no stubs

Direction = Literal["increase", "decrease", "either"]
FloatArray = NDArray[np.float64]

STEP = 0.025
"""Grid step in log-ratio space (about 2.5% in ratio)."""
OFFSETS = STEP * np.arange(1, 121)
"""Alternatives g in (0, 3]: ratios up to e^3 = 20 times the null."""
_LOG_W = -0.5 * OFFSETS**2
LOG_WEIGHTS = _LOG_W - logsumexp(_LOG_W)
"""Half-normal (sigma 1) mixing weights over OFFSETS, normalised."""
CS_GRID = STEP * np.arange(-160, 161)
"""Log ratios at which the confidence sequence is evaluated: ratios e^-4 .. e^4."""


@dataclass(frozen=True)
class _PointTest:
    """A one-sided test of the log ratio against d0: ``up`` means the null is delta <= d0
    (alternatives above), otherwise delta >= d0 (alternatives below)."""

    d0: float
    up: bool

    def points(self) -> FloatArray:
        sign = 1.0 if self.up else -1.0
        return np.concatenate([[self.d0], self.d0 + sign * OFFSETS])


def _log_e(loglik: FloatArray, start: int) -> FloatArray:
    """log e-value of the point test whose d0 sits at ``start`` and alternatives follow it."""
    alt = loglik[..., start + 1 : start + 1 + len(OFFSETS)] - loglik[..., start, None]
    out: FloatArray = logsumexp(alt + LOG_WEIGHTS, axis=-1)
    return out


def _rejected(loglik: FloatArray, log_threshold: float, up: bool) -> NDArray[np.bool_]:
    """For every CS grid point d0, whether the point test at d0 rejects."""
    n = loglik.shape[-1]
    shift = np.arange(1, len(OFFSETS) + 1)[None, :]
    idx = np.arange(n)[:, None] + (shift if up else -shift)
    valid = (idx >= 0) & (idx < n)
    alt = np.where(valid, loglik[np.clip(idx, 0, n - 1)] - loglik[:, None], -np.inf)
    rejected: NDArray[np.bool_] = logsumexp(alt + LOG_WEIGHTS, axis=-1) >= log_threshold
    return rejected


def _run_end(rejected: NDArray[np.bool_]) -> int:
    """Length of the run of rejections at the start of the array."""
    return len(rejected) if rejected.all() else int(np.argmin(rejected))


@dataclass(frozen=True)
class RatioBounds:
    """A confidence sequence for the candidate/baseline rate ratio at one time."""

    lower: float
    upper: float


class RateRatioTest:
    """Sequential test of the candidate/baseline event-rate ratio, valid under continuous
    monitoring and under traffic shares that change between intervals.

    ``failure_margin`` and ``pass_margin`` are relative: with direction ``increase`` the
    candidate fails once it is proven more than ``1 + failure_margin`` times the baseline's
    rate, and passes once it is proven less than ``1 + pass_margin`` times. With ``decrease``
    (events are good things, such as confident predictions) the thresholds mirror to
    ``1 / (1 + margin)``; ``either`` tests both sides, splitting the failure alpha between them.

    Drive it with :meth:`update` once per interval; read :meth:`failed` (roll back),
    :meth:`passed` (may promote), :meth:`estimate` and :meth:`bounds`.
    """

    def __init__(
        self,
        alpha_fail: float,
        alpha_pass: float,
        failure_margin: float = 0.0,
        pass_margin: float = 0.2,
        direction: Direction = "increase",
        batch: tuple[int, ...] = (),
        evidence: bool = True,
    ) -> None:
        if not 0 < alpha_fail < 1 or not 0 < alpha_pass < 1:
            raise ValueError("alpha must lie in (0, 1)")
        if failure_margin < 0 or pass_margin < 0:
            raise ValueError("margins must be non-negative")
        self.direction: Direction = direction
        d_fail, d_pass = float(np.log1p(failure_margin)), float(np.log1p(pass_margin))
        sides = 2 if direction == "either" else 1
        self.log_fail_threshold = float(np.log(sides / alpha_fail))
        self.log_pass_threshold = float(np.log(1 / alpha_pass))
        self._fail_tests: list[_PointTest] = []
        self._pass_tests: list[_PointTest] = []
        if direction in ("increase", "either"):
            self._fail_tests.append(_PointTest(d_fail, up=True))
            self._pass_tests.append(_PointTest(d_pass, up=False))
        if direction in ("decrease", "either"):
            self._fail_tests.append(_PointTest(-d_fail, up=False))
            self._pass_tests.append(_PointTest(-d_pass, up=True))
        # One stratified log-likelihood, at the CS grid (for estimate and bounds; simulations
        # that only need decisions skip it) and at every point test's points.
        self._cs = len(CS_GRID) if evidence else 0
        blocks = [CS_GRID[: self._cs]] + [t.points() for t in self._fail_tests + self._pass_tests]
        starts = np.cumsum([0] + [len(b) for b in blocks])
        self._fail_starts = [int(s) for s in starts[1 : 1 + len(self._fail_tests)]]
        self._pass_starts = [int(s) for s in starts[1 + len(self._fail_tests) : -1]]
        self.points = np.concatenate(blocks)
        self.loglik = np.zeros((*batch, len(self.points)))
        self.candidate_events = np.zeros(batch)
        self.candidate_trials = np.zeros(batch)
        self.baseline_events = np.zeros(batch)
        self.baseline_trials = np.zeros(batch)
        self._lower = -np.inf
        self._upper = np.inf
        self._max_log_e_fail = np.zeros(batch)
        self._max_log_e_pass = np.zeros(batch)

    def update(
        self,
        candidate_events: ArrayLike,
        candidate_trials: ArrayLike,
        baseline_events: ArrayLike,
        baseline_trials: ArrayLike,
    ) -> None:
        """Add one interval's counts (arrays broadcast to the batch shape)."""
        y_c, n_c = np.asarray(candidate_events, float), np.asarray(candidate_trials, float)
        y_b, n_b = np.asarray(baseline_events, float), np.asarray(baseline_trials, float)
        if np.any((y_c < 0) | (y_b < 0) | (y_c > n_c) | (y_b > n_b)):
            raise ValueError("event counts must lie between 0 and the trial counts")
        total = n_c + n_b
        rho = np.divide(n_c, total, out=np.zeros(np.broadcast(n_c, total).shape), where=total > 0)
        informative = (rho > 0) & (rho < 1) & (y_c + y_b > 0)
        rho = np.where(informative, rho, 0.5)[..., None]
        log_norm = np.logaddexp(np.log(rho) + self.points, np.log1p(-rho))
        step = y_c[..., None] * (np.log(rho) + self.points - log_norm) + y_b[..., None] * (np.log1p(-rho) - log_norm)
        self.loglik = self.loglik + np.where(informative[..., None], step, 0.0)
        self.candidate_events = self.candidate_events + y_c
        self.candidate_trials = self.candidate_trials + n_c
        self.baseline_events = self.baseline_events + y_b
        self.baseline_trials = self.baseline_trials + n_b
        self._max_log_e_fail = np.maximum(self._max_log_e_fail, self.log_e_fail())
        self._max_log_e_pass = np.maximum(self._max_log_e_pass, self.log_e_pass())

    # -- decisions ---------------------------------------------------------------------------

    def log_e_fail(self) -> FloatArray:
        """log e-value against 'no regression beyond the failure margin' (the larger side)."""
        out: FloatArray = np.maximum.reduce([_log_e(self.loglik, s) for s in self._fail_starts])
        return out

    def log_e_pass(self) -> FloatArray:
        """log e-value against 'a regression of at least the pass margin' (the weaker side:
        every side must pass)."""
        out: FloatArray = np.minimum.reduce([_log_e(self.loglik, s) for s in self._pass_starts])
        return out

    def max_log_e_fail(self) -> FloatArray:
        """The largest log e-value against 'no regression' so far; 1/exp of it is the
        always-valid p-value."""
        return self._max_log_e_fail

    def failed(self) -> NDArray[np.bool_]:
        """Proven worse than the failure margin at the failure alpha, at any interval so far:
        roll back. (Ville's inequality bounds the chance of ever crossing, so a crossing stays.)"""
        out: NDArray[np.bool_] = self._max_log_e_fail >= self.log_fail_threshold
        return out

    def passed(self) -> NDArray[np.bool_]:
        """Proven within the pass margin, on every side tested, at any interval so far."""
        out: NDArray[np.bool_] = self._max_log_e_pass >= self.log_pass_threshold
        return out

    # -- evidence ----------------------------------------------------------------------------

    def estimate(self) -> FloatArray:
        """Maximum-likelihood rate ratio, stratified by interval; NaN before any event."""
        if not self._cs:
            raise ValueError("this test was built with evidence=False")
        delta = CS_GRID[np.argmax(self.loglik[..., : self._cs], axis=-1)]
        events = self.candidate_events + self.baseline_events
        out: FloatArray = np.where(events > 0, np.exp(delta), np.nan)
        return out

    def bounds(self) -> RatioBounds:
        """Confidence sequence for the rate ratio (for a single test, not a batch): the running
        intersection of every bound so far. Each side uses the alpha of the decision made on
        that side, so with direction increase the lower bound passes 1 + failureMargin when
        :meth:`failed` turns true and the upper bound falls below 1 + passMargin when
        :meth:`passed` does (up to the grid step)."""
        if self.loglik.ndim != 1 or not self._cs:
            raise ValueError("bounds() is for a single test built with evidence=True")
        cs = self.loglik[: self._cs]
        up_threshold = self.log_fail_threshold if self.direction != "decrease" else self.log_pass_threshold
        down_threshold = self.log_pass_threshold if self.direction == "increase" else self.log_fail_threshold
        # Every grid point below the lower bound was itself rejected (and likewise above the
        # upper), so the true ratio lies outside only if a true null was rejected.
        run = _run_end(_rejected(cs, up_threshold, up=True))
        lower = CS_GRID[run - 1] if run else -np.inf
        run = _run_end(_rejected(cs, down_threshold, up=False)[::-1])
        upper = CS_GRID[::-1][run - 1] if run else np.inf
        self._lower = max(self._lower, float(lower))
        self._upper = min(self._upper, float(upper))
        return RatioBounds(float(np.exp(self._lower)), float(np.exp(self._upper)))
