"""Rollout decisions, side by side: cutover's sequential tests against the rules the field uses.

Simulates canary analyses with 30-second intervals over a 30-minute horizon (60 looks), 10,000
runs per scenario (scenarios B1-B8 of the statistics reference), and runs every method on the
same simulated traffic in the same run:

* cutover    the stratified anytime-valid rate-ratio test (cutover.analysis), alpha 0.01,
             failure margin 0, pass margin 0.5, promotion after at least 2 minutes
* flagger    a Flagger-style threshold rule: every interval, the candidate's error rate over the
             last minute above 1.5% is a failed check; 5 failed checks roll back (its
             `analysis.threshold`); otherwise promoted at the end
* kayenta    a Kayenta-style judge: every minute from minute 10, a Mann-Whitney test on the
             per-minute error rates of the two arms at 98% confidence; "High" fails the run;
             otherwise promoted at the end
* naive-z    a one-sided two-proportion z-test on the running totals at alpha 0.01, repeated
             at every interval; otherwise promoted at the end

Reported per method: false rollbacks on A/A scenarios with the Clopper-Pearson 95% upper bound,
detection rate and delay (median, p90) on regressions, and wrong promotions (a worse candidate
promoted). Run: `make bench-analysis` (or `python benchmarks/analysis.py --runs 2000` for a
quick look). Targets: false rollbacks at most alpha (0.01); a 2x error regression at 50 req/s
detected at median 90 s or sooner.
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
from cutover.analysis.histograms import exceedances

INTERVAL = 30.0
LOOKS = 60
ALPHA = 0.01
P_BASE = 0.01
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
    traffic: Traffic, runs: int, *, pass_margin: float = 0.5, alpha: float = ALPHA, min_time: float = 120.0
) -> Outcome:
    test = RateRatioTest(alpha, alpha, failure_margin=0.0, pass_margin=pass_margin, batch=(runs,), evidence=False)
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


METHODS: dict[str, Callable[[Traffic, int], Outcome]] = {
    "cutover": cutover,
    "flagger": flagger,
    "kayenta": kayenta,
    "naive-z": naive_z,
}


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


def latency_outcomes(runs: int, rng: np.random.Generator, scale: float, tail: float, rate: float) -> dict[str, Outcome]:
    p_c, p_b = latency_bucket_probs(scale, tail), latency_bucket_probs(1.0)
    ours = RateRatioTest(ALPHA, ALPHA, pass_margin=0.5, batch=(runs,), evidence=False)
    cum_c, cum_b = np.zeros((runs, len(p_c))), np.zeros((runs, len(p_b)))
    rollback = {k: np.full(runs, np.inf) for k in ("cutover", "flagger-p99", "naive-chi2")}
    chi_crit = stats.chi2.ppf(1 - ALPHA, len(p_c) - 1)
    recent: list[np.ndarray] = []
    flagger_fails = np.zeros(runs)
    for i in range(LOOKS):
        t = (i + 1) * INTERVAL
        n_c, n_b = rng.poisson(rate * INTERVAL, runs), rng.poisson(rate * INTERVAL, runs)
        b_c, b_b = rng.multinomial(n_c, p_c), rng.multinomial(n_b, p_b)
        cum_c, cum_b = cum_c + b_c, cum_b + b_b
        y_c, _ = exceedances(LATENCY_EDGES, np.cumsum(b_c, axis=1), 0.25)
        y_b, _ = exceedances(LATENCY_EDGES, np.cumsum(b_b, axis=1), 0.25)
        ours.update(y_c, n_c, y_b, n_b)
        rollback["cutover"] = first(rollback["cutover"], ours.failed(), t)
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
    args = parser.parse_args()
    runs, rng = args.runs, np.random.default_rng(args.seed)
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
        traffic = error_traffic(runs, rng, **params)  # type: ignore[arg-type]
        for method, run in METHODS.items():
            rows.append(Row(name, method, kind, run(traffic, runs), runs))

    for name, kind, scale, tail in (
        ("B6 latency A/A, 50 req/s", "null", 1.0, 0.0),
        ("B6 latency x1.10, 50 req/s", "alt", 1.10, 0.0),
        ("B6 latency 1% +300 ms tail", "alt", 1.0, 0.01),
    ):
        for method, outcome in latency_outcomes(runs, rng, scale, tail, 50).items():
            rows.append(Row(name, method, kind, outcome, runs))

    rows.append(Row("B7 A/A, 4 correlated metrics (FWER)", "cutover", "null", four_metrics(runs, rng), runs))
    rows.append(
        Row("B7 A/A, 4 correlated metrics (FWER)", "naive-z", "null", four_metrics(runs, rng, naive=True), runs)
    )

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
