"""Rollout decisions, side by side: cutover's sequential tests against the rules the field uses.

Simulates canary analyses with 30-second intervals over a 30-minute horizon (60 looks), 10,000
runs per scenario (scenarios B1-B8 of the statistics reference), and runs every method on the
same simulated traffic in the same run:

* cutover    the stratified anytime-valid rate-ratio test (cutover.analysis) as shipped, with
             the dispersion estimated (the default), alpha 0.01, failure margin 0, pass margin
             0.5, promotion after at least 2 minutes; in F6 also with an absolute failure
             margin of 0.1 percentage points (cut+0.1pp)
* cut-binom  the same test with dispersion "binomial": exact for independent requests only
* flagger    a Flagger-style threshold rule: every interval, the candidate's error rate over the
             last minute above 1.5% is a failed check; 5 failed checks roll back (its
             `analysis.threshold`); otherwise promoted at the end
* kayenta    a Kayenta-style judge: every minute from minute 10, a Mann-Whitney test on the
             per-minute error rates of the two arms at 98% confidence; "High" fails the run;
             otherwise promoted at the end
* naive-z    a one-sided two-proportion z-test on the running totals at alpha 0.01, repeated
             at every interval; otherwise promoted at the end

Field scenarios (issue 13: traffic that is not independent requests; 50 req/s per arm, 1%
errors unless said; every A/A scenario has a 2x regression beside it for the cost in power):

* F1, F2   per-arm overdispersion: each arm's error probability is drawn afresh every interval
           from a Beta around the mean, concentration a + b = 1000 (mild: sd 0.31 points around
           1%) and 100 (strong: sd 0.99 points)
* F3       clustered errors: each bad event is a client sending 1 + Poisson(2) failing requests
           (3 errors per event on average; the mean rate is the same 1%)
* F4       latency jitter: each arm's median latency is multiplied, every interval, by
           exp(N(0, 0.03)) (about 3%); the A/B case is x1.10 under the same jitter
* F5       a custom metric written `round(sum(increase(x[{{interval}}])))` on counters scraped
           every 15 s and every 10 s (random phase): Prometheus' extrapolation stretches each
           window's growth by 30/15 and 30/20, so the counts carry that much less evidence than
           they claim
* F6       a zero-error baseline: 0% against 0.05% errors, which is within an absolute margin of
           0.1 percentage points (counted as "false rollback" when rolled back), and 0% against
           0.5% (a regression of five times that margin)
* F7       pod restarts: each arm restarts a pod with chance 5% per interval, losing the counts
           between the last scrape and the restart (up to half a 15 s scrape period), as the
           provider reads them (a drop is a reset)

Reported per method: false rollbacks on A/A scenarios with the Clopper-Pearson 95% upper bound,
detection rate and delay (median, p90) on regressions, and wrong promotions (a worse candidate
promoted). Run: `make bench-analysis` (or `python benchmarks/analysis.py --runs 2000` for a
quick look; `--only F2` runs the scenarios whose name starts with F2). Targets: false
rollbacks at most alpha (0.01, with a 95% upper bound at most 1.5 alpha) in every A/A scenario;
a 2x error regression at 50 req/s detected at median 120 s or sooner on binomial traffic (B2)
and within the 30-minute horizon on the field scenarios.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from cutover.analysis import BinomialCusum, RateRatioTest
from cutover.analysis.counts import Dispersion
from cutover.analysis.histograms import exceedances

INTERVAL = 30.0
LOOKS = 60
ALPHA = 0.01
P_BASE = 0.01
MILD, STRONG = 1000.0, 100.0
"""Beta concentrations (a + b) of the per-arm, per-interval error probability around 1%: a
standard deviation of 0.31 and 0.99 percentage points."""
CLUSTER = 3.0
"""Mean errors per bad event (1 + Poisson(2): a client retrying a malformed request)."""
JITTER = 0.03
"""Standard deviation of the per-arm, per-interval log factor on the median latency."""
RESTARTS = 0.05
"""Chance per interval and arm that a pod restarts, losing up to half a 15 s scrape period."""
LATENCY_EDGES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Outcome:
    """When each run rolled back and when it was promoted (inf: never)."""

    rollback: np.ndarray
    promote: np.ndarray

    def rolled_back(self) -> np.ndarray:
        return self.rollback < self.promote

    def promoted(self) -> np.ndarray:
        return self.promote < self.rollback


@dataclass
class Traffic:
    """One scenario's simulated intervals: per look, candidate/baseline trials and events."""

    n_c: list[np.ndarray] = field(default_factory=list)
    n_b: list[np.ndarray] = field(default_factory=list)
    y_c: list[np.ndarray] = field(default_factory=list)
    y_b: list[np.ndarray] = field(default_factory=list)


def error_traffic(
    runs: int,
    rng: np.random.Generator,
    *,
    rate_per_arm: float,
    ratio: float,
    shares: np.ndarray | None = None,
    bursts: bool = False,
) -> Traffic:
    """Poisson request counts, binomial errors. With ``shares`` the total (2 x rate) is split
    by the candidate share of each look; ``bursts`` adds 5x error spikes hitting both arms."""
    traffic = Traffic()
    for t in range(LOOKS):
        if shares is None:
            n_c = rng.poisson(rate_per_arm * INTERVAL, runs)
            n_b = rng.poisson(rate_per_arm * INTERVAL, runs)
        else:
            total = rng.poisson(2 * rate_per_arm * INTERVAL, runs)
            n_c = rng.binomial(total, shares[t])
            n_b = total - n_c
        p = P_BASE * (5.0 if bursts and t >= LOOKS - 12 and t % 3 == 0 else 1.0)
        traffic.n_c.append(n_c)
        traffic.n_b.append(n_b)
        traffic.y_c.append(rng.binomial(n_c, min(1.0, p * ratio)))
        traffic.y_b.append(rng.binomial(n_b, p))
    return traffic


def first(times: np.ndarray, hit: np.ndarray, t: float) -> np.ndarray:
    return np.where(hit & np.isinf(times), t, times)


def cutover(
    traffic: Traffic,
    runs: int,
    *,
    pass_margin: float = 0.5,
    alpha: float = ALPHA,
    min_time: float = 120.0,
    failure_margin_absolute: float = 0.0,
    dispersion: Dispersion = "estimated",
) -> Outcome:
    test = RateRatioTest(
        alpha,
        alpha,
        failure_margin=0.0,
        pass_margin=pass_margin,
        batch=(runs,),
        evidence=False,
        failure_margin_absolute=failure_margin_absolute,
        dispersion=dispersion,
    )
    rollback, promote = np.full(runs, np.inf), np.full(runs, np.inf)
    for i in range(LOOKS):
        t = (i + 1) * INTERVAL
        test.update(traffic.y_c[i], traffic.n_c[i], traffic.y_b[i], traffic.n_b[i])
        rollback = first(rollback, test.failed() & np.isinf(promote), t)
        warm = t >= min_time
        promote = first(promote, test.passed() & warm & np.isinf(rollback), t)
    return Outcome(rollback, promote)


def flagger(traffic: Traffic, runs: int, *, max_error_rate: float = 0.015, threshold: int = 5) -> Outcome:
    failures = np.zeros(runs)
    rollback = np.full(runs, np.inf)
    for i in range(LOOKS):
        window = slice(max(0, i - 1), i + 1)  # the last minute
        errors = np.sum(traffic.y_c[window], axis=0)
        requests = np.maximum(np.sum(traffic.n_c[window], axis=0), 1)
        failures += errors / requests > max_error_rate
        rollback = first(rollback, failures >= threshold, (i + 1) * INTERVAL)
    return Outcome(rollback, np.where(np.isinf(rollback), LOOKS * INTERVAL, np.inf))


def kayenta(traffic: Traffic, runs: int, *, start_minute: int = 10) -> Outcome:
    per_minute_c = [
        (traffic.y_c[i] + traffic.y_c[i + 1]) / np.maximum(traffic.n_c[i] + traffic.n_c[i + 1], 1)
        for i in range(0, LOOKS, 2)
    ]
    per_minute_b = [
        (traffic.y_b[i] + traffic.y_b[i + 1]) / np.maximum(traffic.n_b[i] + traffic.n_b[i + 1], 1)
        for i in range(0, LOOKS, 2)
    ]
    rollback = np.full(runs, np.inf)
    for minute in range(start_minute, LOOKS // 2 + 1):
        c = np.stack(per_minute_c[:minute], axis=1)
        b = np.stack(per_minute_b[:minute], axis=1)
        # A 98% two-sided interval that excludes no change, upwards, is a one-sided p < 0.01.
        p = stats.mannwhitneyu(c, b, alternative="greater", axis=1, method="asymptotic").pvalue
        high = (p < 0.01) & (c.mean(axis=1) >= b.mean(axis=1))
        rollback = first(rollback, high, minute * 60.0)
    return Outcome(rollback, np.where(np.isinf(rollback), LOOKS * INTERVAL, np.inf))


def naive_z(traffic: Traffic, runs: int, *, alpha: float = ALPHA) -> Outcome:
    z_crit = stats.norm.ppf(1 - alpha)
    y_c = y_b = n_c = n_b = np.zeros(runs)
    rollback = np.full(runs, np.inf)
    for i in range(LOOKS):
        y_c, y_b = y_c + traffic.y_c[i], y_b + traffic.y_b[i]
        n_c, n_b = n_c + traffic.n_c[i], n_b + traffic.n_b[i]
        pooled = (y_c + y_b) / np.maximum(n_c + n_b, 1)
        se = np.sqrt(np.maximum(pooled * (1 - pooled) * (1 / np.maximum(n_c, 1) + 1 / np.maximum(n_b, 1)), 1e-300))
        z = (y_c / np.maximum(n_c, 1) - y_b / np.maximum(n_b, 1)) / se
        rollback = first(rollback, z > z_crit, (i + 1) * INTERVAL)
    return Outcome(rollback, np.where(np.isinf(rollback), LOOKS * INTERVAL, np.inf))


def cutover_binomial(traffic: Traffic, runs: int) -> Outcome:
    return cutover(traffic, runs, dispersion="binomial")


METHODS: dict[str, Callable[[Traffic, int], Outcome]] = {
    "cutover": cutover,
    "cut-binom": cutover_binomial,
    "flagger": flagger,
    "kayenta": kayenta,
    "naive-z": naive_z,
}


# ----------------------------------------------------------------------------- field scenarios


def _rates(rng: np.random.Generator, mean: float, runs: int, concentration: float | None) -> np.ndarray:
    """Per-run error probabilities for one arm and one interval: ``mean`` itself, or a Beta draw
    around it with the given concentration (a + b) for per-arm overdispersion."""
    if concentration is None or mean <= 0:
        return np.full(runs, mean)
    mean = min(mean, 0.999)
    return rng.beta(mean * concentration, (1 - mean) * concentration, runs)


def _errors(rng: np.random.Generator, n: np.ndarray, p: np.ndarray, cluster: float | None) -> np.ndarray:
    """Errors out of ``n`` requests at probability ``p``; with ``cluster`` each bad event is a
    client sending 1 + Poisson(cluster - 1) failing requests (the same mean rate, clumped)."""
    if cluster is None:
        return rng.binomial(n, np.minimum(p, 1.0))
    events = rng.binomial(n, np.minimum(p / cluster, 1.0))
    out: np.ndarray = np.minimum(events + rng.poisson((cluster - 1) * events), n)
    return out


def field_traffic(
    runs: int,
    rng: np.random.Generator,
    *,
    rate_per_arm: float = 50,
    p_base: float = P_BASE,
    p_candidate: float | None = None,
    concentration: float | None = None,
    cluster: float | None = None,
    restarts: float = 0.0,
) -> Traffic:
    """Traffic as production makes it: per-arm, per-interval error probabilities drawn around
    the mean (``concentration``), errors in clusters (``cluster``), and pod restarts that lose
    the counts between the last scrape and the restart (``restarts``: the chance per interval
    and arm; the provider counts a drop as a reset, so what was served before it in the
    interval is not seen)."""
    traffic = Traffic()
    p_c = p_base if p_candidate is None else p_candidate
    for _ in range(LOOKS):
        n_c = rng.poisson(rate_per_arm * INTERVAL, runs)
        n_b = rng.poisson(rate_per_arm * INTERVAL, runs)
        y_c = _errors(rng, n_c, _rates(rng, p_c, runs, concentration), cluster)
        y_b = _errors(rng, n_b, _rates(rng, p_base, runs, concentration), cluster)
        if restarts:
            # A restart at a uniform point of a 15 s scrape period loses that part of the period.
            for n, y in ((n_c, y_c), (n_b, y_b)):
                lost = np.where(rng.random(runs) < restarts, rng.random(runs) * 0.5, 0.0)
                kept_n = rng.binomial(n, 1 - lost)
                y[:] = rng.hypergeometric(y, n - y, kept_n) if np.any(lost) else y
                n[:] = kept_n
        traffic.n_c.append(n_c)
        traffic.n_b.append(n_b)
        traffic.y_c.append(y_c)
        traffic.y_b.append(y_b)
    return traffic


def extrapolated_increase(values: np.ndarray, times: np.ndarray, start: float, end: float) -> np.ndarray:
    """Prometheus' ``increase(x[end - start])`` at ``end`` (its extrapolatedRate): the growth
    between the first and last sample in the window, stretched toward the window's edges
    (fully when a sample lies within 1.1 average scrape gaps of an edge, else by half a gap;
    not below zero for a counter). ``values`` is (runs, samples) with one row per run;
    ``times`` the same shape."""
    inside = (times > start) & (times <= end)
    count = inside.sum(axis=1)
    first_i = np.argmax(inside, axis=1)
    last_i = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
    rows = np.arange(len(values))
    first, last = values[rows, first_i], values[rows, last_i]
    t_first, t_last = times[rows, first_i], times[rows, last_i]
    delta = last - first
    sampled = t_last - t_first
    safe = np.where(count >= 2, sampled, 1.0)
    average = safe / np.maximum(count - 1, 1)
    to_start, to_end = t_first - start, end - t_last
    to_zero = np.where(delta > 0, safe * first / np.where(delta > 0, delta, 1.0), np.inf)
    to_start = np.minimum(to_start, to_zero)
    threshold = average * 1.1
    to_start = np.where(to_start < threshold, to_start, average / 2)
    to_end = np.where(to_end < threshold, to_end, average / 2)
    out = delta * (safe + to_start + to_end) / safe
    return np.where(count >= 2, out, np.nan)


def increase_traffic(
    runs: int, rng: np.random.Generator, *, scrape: float, ratio: float = 1.0, rate_per_arm: float = 50
) -> Traffic:
    """A custom metric written as the example templates had it,
    ``round(sum(increase(x[{{interval}}])))``, on counters scraped every ``scrape`` seconds
    (a random phase per run): each interval's counts are the extrapolated increase, rounded."""
    periods = int(LOOKS * INTERVAL / scrape) + 1
    phase = rng.random(runs)[:, None] * scrape
    times = phase + scrape * np.arange(periods)[None, :]
    traffic = Traffic()
    arms = []
    for p in (P_BASE * ratio, P_BASE):
        n = rng.poisson(rate_per_arm * scrape, (runs, periods))
        y = rng.binomial(n, p)
        arms.append((np.cumsum(n, axis=1), np.cumsum(y, axis=1)))
    for i in range(LOOKS):
        start, end = i * INTERVAL, (i + 1) * INTERVAL
        read = []
        for n_cum, y_cum in arms:
            n = np.round(extrapolated_increase(n_cum, times, start, end))
            y = np.round(extrapolated_increase(y_cum, times, start, end))
            read.append((np.nan_to_num(n), np.nan_to_num(np.minimum(y, n))))
        traffic.n_c.append(read[0][0])
        traffic.y_c.append(read[0][1])
        traffic.n_b.append(read[1][0])
        traffic.y_b.append(read[1][1])
    return traffic


# ----------------------------------------------------------------------------- latency (B6)


def latency_bucket_probs(scale: float, tail: float = 0.0) -> np.ndarray:
    """Bucket probabilities (finite edges, then +Inf) of lognormal latency (median 100 ms x
    scale, sigma 0.6), with a fraction ``tail`` of requests 300 ms slower."""
    edges = np.array(LATENCY_EDGES)

    def cdf(x: np.ndarray) -> np.ndarray:
        return stats.lognorm.cdf(x, s=0.6, scale=0.1 * scale)

    shifted = np.where(edges > 0.3, cdf(np.maximum(edges - 0.3, 1e-9)), 0.0)
    cum = (1 - tail) * cdf(edges) + tail * shifted
    return np.diff(np.concatenate([[0.0], cum, [1.0]]))


def jittered_bucket_probs(scale: float, tail: float, factors: np.ndarray) -> np.ndarray:
    """Bucket probabilities per run (rows) with each run's median multiplied by its factor."""
    edges = np.array(LATENCY_EDGES)[None, :]
    scales = 0.1 * scale * factors[:, None]

    def cdf(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = stats.lognorm.cdf(x, s=0.6, scale=scales)
        return out

    shifted = np.where(edges > 0.3, cdf(np.maximum(edges - 0.3, 1e-9)), 0.0)
    cum = (1 - tail) * cdf(edges) + tail * shifted
    ones = np.ones((len(factors), 1))
    return np.diff(np.concatenate([0 * ones, cum, ones], axis=1), axis=1)


def latency_outcomes(
    runs: int, rng: np.random.Generator, scale: float, tail: float, rate: float, jitter: float = 0.0
) -> dict[str, Outcome]:
    """Latency runs; ``jitter`` multiplies each arm's median, every interval, by its own
    lognormal factor exp(N(0, jitter)) (garbage collection, noisy neighbours)."""
    p_c, p_b = latency_bucket_probs(scale, tail), latency_bucket_probs(1.0)
    ours = RateRatioTest(ALPHA, ALPHA, pass_margin=0.5, batch=(runs,), evidence=False)
    binomial = RateRatioTest(ALPHA, ALPHA, pass_margin=0.5, batch=(runs,), evidence=False, dispersion="binomial")
    cum_c, cum_b = np.zeros((runs, len(p_c))), np.zeros((runs, len(p_b)))
    rollback = {k: np.full(runs, np.inf) for k in ("cutover", "cut-binom", "flagger-p99", "naive-chi2")}
    chi_crit = stats.chi2.ppf(1 - ALPHA, len(p_c) - 1)
    recent: list[np.ndarray] = []
    flagger_fails = np.zeros(runs)
    for i in range(LOOKS):
        t = (i + 1) * INTERVAL
        n_c, n_b = rng.poisson(rate * INTERVAL, runs), rng.poisson(rate * INTERVAL, runs)
        if jitter:
            b_c = rng.multinomial(n_c, jittered_bucket_probs(scale, tail, rng.lognormal(0.0, jitter, runs)))
            b_b = rng.multinomial(n_b, jittered_bucket_probs(1.0, 0.0, rng.lognormal(0.0, jitter, runs)))
        else:
            b_c, b_b = rng.multinomial(n_c, p_c), rng.multinomial(n_b, p_b)
        cum_c, cum_b = cum_c + b_c, cum_b + b_b
        y_c, _ = exceedances(LATENCY_EDGES, np.cumsum(b_c, axis=1), 0.25)
        y_b, _ = exceedances(LATENCY_EDGES, np.cumsum(b_b, axis=1), 0.25)
        ours.update(y_c, n_c, y_b, n_b)
        rollback["cutover"] = first(rollback["cutover"], ours.failed(), t)
        binomial.update(y_c, n_c, y_b, n_b)
        rollback["cut-binom"] = first(rollback["cut-binom"], binomial.failed(), t)
        # Flagger: p99 over the last minute (histogram_quantile-like: the bucket edge reached)
        # above 500 ms is a failed check; 5 failed checks roll back.
        recent = [*recent[-1:], b_c]
        window = np.sum(recent, axis=0)
        frac = np.cumsum(window, axis=1) / np.maximum(window.sum(axis=1, keepdims=True), 1)
        p99_edge = np.array((*LATENCY_EDGES, np.inf))[np.argmax(frac >= 0.99, axis=1)]
        flagger_fails += p99_edge > 0.5
        rollback["flagger-p99"] = first(rollback["flagger-p99"], flagger_fails >= 5, t)
        # Naive: Pearson chi-squared on the cumulative 2xK table at every look.
        table = np.stack([cum_c, cum_b], axis=1) + 0.5
        expected = (
            table.sum(axis=1, keepdims=True) * table.sum(axis=2, keepdims=True) / table.sum(axis=(1, 2))[:, None, None]
        )
        chi2 = np.sum((table - expected) ** 2 / expected, axis=(1, 2))
        rollback["naive-chi2"] = first(rollback["naive-chi2"], chi2 > chi_crit, t)
    return {k: Outcome(v, np.full(runs, np.inf)) for k, v in rollback.items()}


# ----------------------------------------------------------------------------- reporting


def cp_upper(k: int, n: int, level: float = 0.95) -> float:
    """Clopper-Pearson upper bound of a binomial proportion."""
    return 1.0 if k >= n else float(stats.beta.ppf(level, k + 1, n - k))


def seconds(values: np.ndarray, q: float) -> str:
    finite = values[np.isfinite(values)]
    return f"{np.quantile(finite, q):.0f}" if len(finite) else "-"


@dataclass
class Row:
    scenario: str
    method: str
    kind: str
    outcome: Outcome
    runs: int

    def cells(self) -> list[str]:
        rolled_back, promoted = self.outcome.rolled_back(), self.outcome.promoted()
        promote_median = seconds(np.where(promoted, self.outcome.promote, np.inf), 0.5)
        if self.kind == "null":
            k = int(rolled_back.sum())
            false = [f"{k / self.runs:.2%}", f"{cp_upper(k, self.runs):.2%}", "-", "-", "-"]
            return [*false, f"{promoted.mean():.1%}", promote_median]
        times = np.where(rolled_back, self.outcome.rollback, np.inf)
        detected = ["-", "-", f"{rolled_back.mean():.1%}", seconds(times, 0.5), seconds(times, 0.9)]
        return [*detected, f"{promoted.mean():.2%}", promote_median]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--only", default="", help="run only the scenarios whose name starts with this")
    args = parser.parse_args()
    runs, rng, only = args.runs, np.random.default_rng(args.seed), args.only
    started = time.monotonic()
    rows: list[Row] = []

    ramp = np.repeat([0.05, 0.10, 0.25, 0.50], LOOKS // 4)
    scenarios = [
        ("B1 A/A, 50 req/s per arm", "null", dict(rate_per_arm=50, ratio=1.0)),
        ("B2 2x errors, 50 req/s", "alt", dict(rate_per_arm=50, ratio=2.0)),
        ("B3 A/A, 5 req/s", "null", dict(rate_per_arm=5, ratio=1.0)),
        ("B3 2x errors, 5 req/s", "alt", dict(rate_per_arm=5, ratio=2.0)),
        ("B4 A/A, ramp 5-50% + shared bursts", "null", dict(rate_per_arm=50, ratio=1.0, shares=ramp, bursts=True)),
        ("B5 ratio 1.5 (= pass margin), 50 req/s", "alt", dict(rate_per_arm=50, ratio=1.5)),
    ]
    for name, kind, params in scenarios:
        if only and not name.startswith(only):
            continue
        traffic = error_traffic(runs, rng, **params)  # type: ignore[arg-type]
        for method, run in METHODS.items():
            rows.append(Row(name, method, kind, run(traffic, runs), runs))

    for name, kind, scale, tail in (
        ("B6 latency A/A, 50 req/s", "null", 1.0, 0.0),
        ("B6 latency x1.10, 50 req/s", "alt", 1.10, 0.0),
        ("B6 latency 1% +300 ms tail", "alt", 1.0, 0.01),
    ):
        if only and not name.startswith(only):
            continue
        for method, outcome in latency_outcomes(runs, rng, scale, tail, 50).items():
            rows.append(Row(name, method, kind, outcome, runs))

    if not only or "B7".startswith(only):
        b7 = "B7 A/A, 4 correlated metrics (FWER)"
        rows.append(Row(b7, "cutover", "null", four_metrics(runs, rng), runs))
        rows.append(Row(b7, "naive-z", "null", four_metrics(runs, rng, naive=True), runs))

    field_scenarios = [
        ("F1 A/A, per-arm dispersion mild", "null", dict(concentration=MILD)),
        ("F1 2x errors, dispersion mild", "alt", dict(concentration=MILD, p_candidate=2 * P_BASE)),
        ("F2 A/A, per-arm dispersion strong", "null", dict(concentration=STRONG)),
        ("F2 2x errors, dispersion strong", "alt", dict(concentration=STRONG, p_candidate=2 * P_BASE)),
        ("F3 A/A, clustered errors", "null", dict(cluster=CLUSTER)),
        ("F3 2x errors, clustered", "alt", dict(cluster=CLUSTER, p_candidate=2 * P_BASE)),
        ("F6 0% vs 0.05% (within 0.1 pp)", "null", dict(p_base=0.0, p_candidate=0.0005)),
        ("F6 0% vs 0.5% errors", "alt", dict(p_base=0.0, p_candidate=0.005)),
        ("F7 A/A, pod restarts", "null", dict(restarts=RESTARTS)),
        ("F7 2x errors, pod restarts", "alt", dict(restarts=RESTARTS, p_candidate=2 * P_BASE)),
    ]
    for name, kind, params in field_scenarios:
        if only and not name.startswith(only):
            continue
        traffic = field_traffic(runs, rng, **params)
        for method, run in METHODS.items():
            rows.append(Row(name, method, kind, run(traffic, runs), runs))
        if name.startswith("F6"):
            outcome = cutover(traffic, runs, failure_margin_absolute=0.001)
            rows.append(Row(name, "cut+0.1pp", kind, outcome, runs))
    for name, kind, scrape, ratio in (
        ("F5 A/A, increase() at 15 s scrape", "null", 15.0, 1.0),
        ("F5 2x errors, increase() at 15 s", "alt", 15.0, 2.0),
        ("F5 A/A, increase() at 10 s scrape", "null", 10.0, 1.0),
        ("F5 2x errors, increase() at 10 s", "alt", 10.0, 2.0),
    ):
        if only and not name.startswith(only):
            continue
        traffic = increase_traffic(runs, rng, scrape=scrape, ratio=ratio)
        for method, run in METHODS.items():
            rows.append(Row(name, method, kind, run(traffic, runs), runs))
    for name, kind, scale in (
        ("F4 latency A/A, jitter", "null", 1.0),
        ("F4 latency x1.10, jitter", "alt", 1.10),
    ):
        if only and not name.startswith(only):
            continue
        for method, outcome in latency_outcomes(runs, rng, scale, 0.0, 50, jitter=JITTER).items():
            rows.append(Row(name, method, kind, outcome, runs))

    header = [
        "scenario",
        "method",
        "false rollback",
        "95% upper",
        "detected",
        "median s",
        "p90 s",
        "promoted",
        "promote s",
    ]
    widths = [40, 12, 15, 10, 9, 9, 7, 9, 9]
    print(f"rollout decisions: {runs} runs per scenario, 30 s intervals, 30 min horizon, alpha {ALPHA}\n")
    print(" ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        cells = [row.scenario, row.method, *row.cells()]
        print(" ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    print()
    if not only or "B8".startswith(only):
        cusum_report(rng)
    print(f"\n(done in {time.monotonic() - started:.0f} s)")


def four_metrics(runs: int, rng: np.random.Generator, naive: bool = False) -> Outcome:
    """Errors, slow requests, low-confidence predictions and safety violations, all A/A, with a
    shared per-interval load factor making them move together; alpha split four ways."""
    rates = (0.01, 0.05, 0.10, 0.002)
    tests = [RateRatioTest(ALPHA / 4, ALPHA, batch=(runs,), evidence=False) for _ in rates]
    z_crit = stats.norm.ppf(1 - ALPHA)
    totals = np.zeros((len(rates), 4, runs))
    rollback = np.full(runs, np.inf)
    for i in range(LOOKS):
        shock = rng.lognormal(0.0, 0.5, runs)  # common-mode: both arms, every metric
        n_c, n_b = rng.poisson(1500, runs), rng.poisson(1500, runs)
        any_fail = np.zeros(runs, bool)
        for k, (p, test) in enumerate(zip(rates, tests, strict=True)):
            q = np.minimum(p * shock, 1.0)
            y_c, y_b = rng.binomial(n_c, q), rng.binomial(n_b, q)
            if naive:
                totals[k] += np.stack([y_c, n_c, y_b, n_b])
                yc, nc, yb, nb = totals[k]
                pooled = (yc + yb) / (nc + nb)
                se = np.sqrt(np.maximum(pooled * (1 - pooled) * (1 / nc + 1 / nb), 1e-300))
                any_fail |= (yc / nc - yb / nb) / se > z_crit
            else:
                test.update(y_c, n_c, y_b, n_b)
                any_fail |= test.failed()
        rollback = first(rollback, any_fail, (i + 1) * INTERVAL)
    return Outcome(rollback, np.full(runs, np.inf))


def cusum_report(rng: np.random.Generator, runs: int = 2000, horizon: int = 5000) -> None:
    """B8: post-promotion CUSUM, 1% -> 2% errors at 1500 requests per interval, h = ln 1000."""
    watch = BinomialCusum(p0=0.01, shift=2.0, h=math.log(1000), batch=(runs,))
    for _ in range(horizon):
        watch.update(rng.binomial(1500, 0.01, runs), 1500)
    run_length = np.where(watch.alarmed, watch.alarmed_at, horizon)
    shifted = BinomialCusum(p0=0.01, shift=2.0, h=math.log(1000), batch=(runs,))
    for _ in range(50):
        shifted.update(rng.binomial(1500, 0.02, runs), 1500)
    delay = shifted.alarmed_at
    print("B8 post-promotion CUSUM (1% -> 2%, 1500 requests/interval, h = ln 1000):")
    print(
        f"  in control: {watch.alarmed.mean():.2%} of {runs} runs alarmed within {horizon} intervals; "
        f"mean run length >= {run_length.mean():.0f} intervals (target >= 1000)"
    )
    print(
        f"  after the shift: detected {np.mean(~np.isnan(delay)):.1%}, median delay {np.nanmedian(delay):.0f} "
        f"intervals, p90 {np.nanquantile(delay, 0.9):.0f} (target median <= 2)"
    )


if __name__ == "__main__":
    main()
