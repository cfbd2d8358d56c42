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

# scipy.special, not scipy.stats: the quantile below is special.chdtri, and importing
# scipy.stats cost the operator 46 MB of its resident memory.
from scipy.special import chdtri, logsumexp  # type: ignore[import-untyped]  # scipy ships no stubs

Direction = Literal["increase", "decrease", "either"]
Dispersion = Literal["estimated", "binomial"]
FloatArray = NDArray[np.float64]

STEP = 0.025
"""Grid step in log-ratio space (about 2.5% in ratio)."""
OFFSETS = STEP * np.arange(1, 121)
"""Alternatives g in (0, 3]: ratios up to e^3 = 20 times the null."""
_LOG_W = -0.5 * OFFSETS**2
LOG_WEIGHTS = _LOG_W - logsumexp(_LOG_W)
"""Half-normal (sigma 1) mixing weights over OFFSETS, normalised."""
CS_GRID: FloatArray = STEP * np.arange(-160, 161, dtype=np.float64)
"""Log ratios at which the confidence sequence is evaluated: ratios e^-4 .. e^4."""
FIT_GRID: FloatArray = CS_GRID[::4]
"""Log ratios (step 0.1) at which the ratio is fitted for the dispersion estimate."""
INTERVAL_CAP = 2.3
"""With dispersion estimated, the most one interval can add to any alternative's tempered log
likelihood ratio when it arrives (a factor of about 10): half the log threshold at alpha 0.01,
so one interval never rolls anything back on its own however its counts were made."""
DISPERSION_PRIOR = 1.0
"""Pseudo-intervals of binomial dispersion (1) that the dispersion estimates start from."""
CAP_CONFIDENCE = 0.999
"""Confidence of the lower bound on the dispersion that scales INTERVAL_CAP (see
:meth:`RateRatioTest.update`)."""


@dataclass(frozen=True)
class _PointTest:
    """A one-sided test of the log ratio against d0: ``up`` means the null is delta <= d0
    (alternatives above), otherwise delta >= d0 (alternatives below). ``extra_candidate`` and
    ``extra_baseline`` are pseudo-events per trial added to that arm before comparing: they turn
    the ratio null into ``p_c + extra_candidate <= (1 + m) (p_b + extra_baseline)`` and so carry
    the absolute margins (see :class:`RateRatioTest`)."""

    d0: float
    up: bool
    extra_candidate: float = 0.0
    extra_baseline: float = 0.0

    def points(self) -> FloatArray:
        sign = 1.0 if self.up else -1.0
        return np.concatenate([[self.d0], self.d0 + sign * OFFSETS])


def _log_likelihood_steps(
    points: FloatArray, y_c: FloatArray, y_b: FloatArray, rho: FloatArray, informative: NDArray[np.bool_]
) -> FloatArray:
    """One interval's conditional log-likelihood of the candidate's share of the events at each
    log ratio in ``points`` (zero where the interval says nothing)."""
    r = np.where(informative, rho, 0.5)[..., None]
    log_norm = np.logaddexp(np.log(r) + points, np.log1p(-r))
    step = y_c[..., None] * (np.log(r) + points - log_norm) + y_b[..., None] * (np.log1p(-r) - log_norm)
    out: FloatArray = np.where(informative[..., None], step, 0.0)
    return out


_SHIFT = np.arange(1, len(OFFSETS) + 1)[None, :]
_CS_UP = np.arange(len(CS_GRID))[:, None] + _SHIFT
_CS_DOWN = np.arange(len(CS_GRID))[:, None] - _SHIFT
_CS_UP_VALID = len(CS_GRID) > _CS_UP
_CS_DOWN_VALID = _CS_DOWN >= 0


def _cs_relative(step: FloatArray, up: bool) -> FloatArray:
    """For every CS grid point d0 (rows) and offset (columns), one interval's log-likelihood
    ratio of d0 +- offset against d0 (zero where the alternative lies off the grid)."""
    idx, valid = (_CS_UP, _CS_UP_VALID) if up else (_CS_DOWN, _CS_DOWN_VALID)
    out: FloatArray = np.where(valid, step[np.clip(idx, 0, len(CS_GRID) - 1)] - step[:, None], 0.0)
    return out


def _rejected(relative: FloatArray, log_threshold: float, up: bool) -> NDArray[np.bool_]:
    """For every CS grid point d0, whether the point test at d0 rejects, from its summed
    (capped, tempered) log-likelihood ratios."""
    valid = _CS_UP_VALID if up else _CS_DOWN_VALID
    alt = np.where(valid, relative, -np.inf)
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

    ``failure_margin_absolute`` and ``pass_margin_absolute`` (events per trial, 0.001 = 0.1
    percentage points) add to the relative margins: with ``increase`` the candidate fails once
    it is proven above ``(1 + failure_margin) * p_b + failure_margin_absolute`` and passes once
    proven below ``(1 + pass_margin) * p_b + pass_margin_absolute``; with ``decrease`` it fails
    below ``p_b / (1 + failure_margin) - failure_margin_absolute``. So a baseline without any
    event does not turn every stray event of the candidate into a rollback.

    ``dispersion`` says what the counts are assumed to be. ``"estimated"`` (the default) assumes
    nothing about how requests fail together: intervals are the units, the dispersion of the
    counts beyond binomial is estimated from the intervals seen (across the arms and within
    each arm) and every interval's evidence is divided by it, and no single interval can move
    the evidence by more than a factor ``e**INTERVAL_CAP``. ``"binomial"`` is the plain
    stratified likelihood, exact when every request fails independently with one probability
    per arm and interval: faster, but not valid on overdispersed or clustered counts.

    Drive it with :meth:`update` once per interval; read :meth:`failed` (roll back),
    :meth:`passed` (may promote), :meth:`estimate`, :meth:`bounds` and :meth:`dispersion_factor`.
    Raises ValueError for alphas outside (0, 1), negative margins or an unknown dispersion.
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
        *,
        failure_margin_absolute: float = 0.0,
        pass_margin_absolute: float = 0.0,
        dispersion: Dispersion = "estimated",
    ) -> None:
        if not 0 < alpha_fail < 1 or not 0 < alpha_pass < 1:
            raise ValueError("alpha must lie in (0, 1)")
        if min(failure_margin, pass_margin, failure_margin_absolute, pass_margin_absolute) < 0:
            raise ValueError("margins must be non-negative")
        if dispersion not in ("estimated", "binomial"):
            raise ValueError(f"dispersion must be estimated or binomial, not {dispersion!r}")
        self.direction: Direction = direction
        self.dispersion: Dispersion = dispersion
        d_fail, d_pass = float(np.log1p(failure_margin)), float(np.log1p(pass_margin))
        a_fail, a_pass = failure_margin_absolute, pass_margin_absolute
        sides = 2 if direction == "either" else 1
        self.log_fail_threshold = float(np.log(sides / alpha_fail))
        self.log_pass_threshold = float(np.log(1 / alpha_pass))
        self._fail_tests: list[_PointTest] = []
        self._pass_tests: list[_PointTest] = []
        if direction in ("increase", "either"):
            # p_c <= (1 + m) p_b + a  <=>  p_c <= (1 + m) (p_b + a / (1 + m))
            self._fail_tests.append(_PointTest(d_fail, up=True, extra_baseline=a_fail / (1 + failure_margin)))
            self._pass_tests.append(_PointTest(d_pass, up=False, extra_baseline=a_pass / (1 + pass_margin)))
        if direction in ("decrease", "either"):
            # p_c >= p_b / (1 + m) - a  <=>  p_c + a >= p_b / (1 + m)
            self._fail_tests.append(_PointTest(-d_fail, up=False, extra_candidate=a_fail))
            self._pass_tests.append(_PointTest(-d_pass, up=True, extra_candidate=a_pass))
        tests = self._fail_tests + self._pass_tests
        # Per point test, the sum over intervals of each alternative's log-likelihood ratio
        # against the test's own null point (capped per interval when the dispersion is
        # estimated); the CS grid and the dispersion grid keep plain log-likelihoods.
        self._relative = [np.zeros((*batch, len(OFFSETS))) for _ in tests]
        self._cs = len(CS_GRID) if evidence else 0
        self.loglik = np.zeros((*batch, self._cs))
        """Stratified log-likelihood at every CS grid point (empty with evidence=False)."""
        # The point test at every CS grid point, upwards and downwards, summed as the decisions
        # are (capped per interval), so the bounds cross the margins when the decisions do.
        # float32: 2 x 321 x 120 sums are 300 kB per metric, kept for the length of a rollout.
        self._cs_relative = (
            [np.zeros((self._cs, len(OFFSETS)), np.float32) for _ in range(2)] if evidence and not batch else []
        )
        self._fit = np.zeros((*batch, len(FIT_GRID)))
        self._pearson = np.zeros((*batch, len(FIT_GRID)))
        self._arm_sums = np.zeros((6, *batch))  # per arm: sum y^2 / n, sum y, sum n
        self.intervals = np.zeros(batch)
        """Intervals with events in both arms' comparison (the units of the dispersion estimate)."""
        self._dispersion = np.ones(batch)
        self._cap_scale = np.ones(batch)
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
        """Add one interval's counts (arrays broadcast to the batch shape). Raises ValueError
        when an event count is negative or above its trials."""
        y_c, n_c = np.asarray(candidate_events, float), np.asarray(candidate_trials, float)
        y_b, n_b = np.asarray(baseline_events, float), np.asarray(baseline_trials, float)
        if np.any((y_c < 0) | (y_b < 0) | (y_c > n_c) | (y_b > n_b)):
            raise ValueError("event counts must lie between 0 and the trial counts")
        shape = np.broadcast(y_c, n_c, y_b, n_b, self.candidate_events).shape
        y_c, n_c, y_b, n_b = (np.broadcast_to(v, shape) for v in (y_c, n_c, y_b, n_b))
        total = n_c + n_b
        rho = np.divide(n_c, total, out=np.zeros(shape), where=total > 0)
        split = (rho > 0) & (rho < 1)
        informative = split & (y_c + y_b > 0)
        estimated = self.dispersion == "estimated"
        if estimated:
            self._update_dispersion(y_c, n_c, y_b, n_b, rho, informative)
        # One interval's log-likelihood ratios are capped at INTERVAL_CAP times a lower
        # confidence bound of the dispersion, so once divided by the dispersion no interval adds
        # more than INTERVAL_CAP nats. A cap of INTERVAL_CAP raw nats cut off the upper tail of
        # dispersed intervals and not the lower, biasing every sum toward the null (a 2x
        # regression under strong dispersion went unseen); the point estimate instead, noisy over
        # the first intervals, let two lucky intervals roll back.
        cap = INTERVAL_CAP * self._cap_scale[..., None] if estimated else np.inf
        for i, test in enumerate(self._fail_tests + self._pass_tests):
            e_c, e_b = y_c + test.extra_candidate * n_c, y_b + test.extra_baseline * n_b
            steps = _log_likelihood_steps(test.points(), e_c, e_b, rho, split & (e_c + e_b > 0))
            self._relative[i] = self._relative[i] + np.minimum(steps[..., 1:] - steps[..., :1], cap)
        if self._cs:
            step = _log_likelihood_steps(CS_GRID, y_c, y_b, rho, informative)
            self.loglik = self.loglik + step
            for side, up in ((0, True), (1, False)):
                self._cs_relative[side] += np.minimum(_cs_relative(step, up), cap)
        self.candidate_events = self.candidate_events + y_c
        self.candidate_trials = self.candidate_trials + n_c
        self.baseline_events = self.baseline_events + y_b
        self.baseline_trials = self.baseline_trials + n_b
        self._max_log_e_fail = np.maximum(self._max_log_e_fail, self.log_e_fail())
        self._max_log_e_pass = np.maximum(self._max_log_e_pass, self.log_e_pass())

    def _update_dispersion(
        self,
        y_c: FloatArray,
        n_c: FloatArray,
        y_b: FloatArray,
        n_b: FloatArray,
        rho: FloatArray,
        informative: NDArray[np.bool_],
    ) -> None:
        """Pearson estimates of the dispersion (1 for binomial counts) from the intervals so far:
        across the arms (the candidate's share of each interval's events around the fitted ratio,
        the spread that decides), and within each arm (its rate from interval to interval, which
        sees per-arm noise one interval sooner); each shrunk toward 1 by DISPERSION_PRIOR
        pseudo-intervals; the larger one is used. Also the larger of their lower confidence
        bounds at CAP_CONFIDENCE, which scales the per-interval cap."""
        self._fit = self._fit + _log_likelihood_steps(FIT_GRID, y_c, y_b, rho, informative)
        k = (y_c + y_b)[..., None]
        r = np.where(informative, rho, 0.5)[..., None]
        theta = r * np.exp(FIT_GRID) / (r * np.exp(FIT_GRID) + 1 - r)
        variance = np.maximum(k * theta * (1 - theta), 1e-12)
        self._pearson = self._pearson + np.where(
            informative[..., None], (y_c[..., None] - k * theta) ** 2 / variance, 0.0
        )
        self.intervals = self.intervals + informative
        sums = self._arm_sums
        for offset, y, n in ((0, y_c, n_c), (3, y_b, n_b)):
            seen = informative & (n > 0)
            sums[offset] = sums[offset] + np.where(seen, y**2 / np.maximum(n, 1.0), 0.0)
            sums[offset + 1] = sums[offset + 1] + np.where(seen, y, 0.0)
            sums[offset + 2] = sums[offset + 2] + np.where(seen, n, 0.0)
        best = np.argmax(self._fit, axis=-1)
        across = np.take_along_axis(self._pearson, best[..., None], axis=-1)[..., 0]
        within = np.zeros_like(across)
        for offset in (0, 3):
            p = sums[offset + 1] / np.maximum(sums[offset + 2], 1.0)
            # sum (y - n p)^2 / (n p) over the intervals, expanded into running sums
            spread = sums[offset] / np.maximum(p, 1e-300) - 2 * sums[offset + 1] + p * sums[offset + 2]
            within = within + np.where(p > 0, np.maximum(spread, 0.0), 0.0)
        df = np.maximum(self.intervals - 1, 0)
        prior = DISPERSION_PRIOR
        self._dispersion = np.maximum.reduce(
            [np.ones_like(across), (prior + across) / (prior + df), (prior + within) / (prior + 2 * df)]
        )
        # Each Pearson sum taken as the dispersion times a chi-square on its degrees of freedom;
        # chdtri(k, 1 - q) is the chi-square's q quantile (scipy.stats.chi2.ppf(q, k)).
        self._cap_scale = np.maximum.reduce(
            [
                np.ones_like(across),
                (prior + across) / chdtri(prior + df, 1 - CAP_CONFIDENCE),
                (prior + within) / chdtri(prior + 2 * df, 1 - CAP_CONFIDENCE),
            ]
        )

    # -- decisions ---------------------------------------------------------------------------

    def dispersion_factor(self) -> FloatArray:
        """The factor every interval's evidence is divided by: 1 for binomial counts (and
        always with dispersion="binomial"), about the variance of the counts over the binomial
        variance otherwise."""
        return self._dispersion

    def _log_e(self, index: int) -> FloatArray:
        tempered = self._relative[index] / self._dispersion[..., None]
        out: FloatArray = logsumexp(tempered + LOG_WEIGHTS, axis=-1)
        return out

    def log_e_fail(self) -> FloatArray:
        """log e-value against 'no regression beyond the failure margin' (the larger side)."""
        out: FloatArray = np.maximum.reduce([self._log_e(i) for i in range(len(self._fail_tests))])
        return out

    def log_e_pass(self) -> FloatArray:
        """log e-value against 'a regression of at least the pass margin' (the weaker side:
        every side must pass)."""
        first = len(self._fail_tests)
        out: FloatArray = np.minimum.reduce([self._log_e(first + i) for i in range(len(self._pass_tests))])
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
        delta = CS_GRID[np.argmax(self.loglik, axis=-1)]
        events = self.candidate_events + self.baseline_events
        out: FloatArray = np.where(events > 0, np.exp(delta), np.nan)
        return out

    def bounds(self) -> RatioBounds:
        """Confidence sequence for the rate ratio (for a single test, not a batch): the running
        intersection of every bound so far, widened by the dispersion factor. Each side uses the
        alpha of the decision made on that side, so with direction increase and no absolute
        margin the lower bound passes 1 + failureMargin about when :meth:`failed` turns true and
        the upper bound falls below 1 + passMargin about when :meth:`passed` does."""
        if self.loglik.ndim != 1 or not self._cs_relative:
            raise ValueError("bounds() is for a single test built with evidence=True")
        up_side, down_side = (relative.astype(np.float64) / float(self._dispersion) for relative in self._cs_relative)
        up_threshold = self.log_fail_threshold if self.direction != "decrease" else self.log_pass_threshold
        down_threshold = self.log_pass_threshold if self.direction == "increase" else self.log_fail_threshold
        # Every grid point below the lower bound was itself rejected (and likewise above the
        # upper), so the true ratio lies outside only if a true null was rejected.
        run = _run_end(_rejected(up_side, up_threshold, up=True))
        lower = CS_GRID[run - 1] if run else -np.inf
        run = _run_end(_rejected(down_side, down_threshold, up=False)[::-1])
        upper = CS_GRID[::-1][run - 1] if run else np.inf
        self._lower = max(self._lower, float(lower))
        self._upper = min(self._upper, float(upper))
        return RatioBounds(float(np.exp(self._lower)), float(np.exp(self._upper)))
