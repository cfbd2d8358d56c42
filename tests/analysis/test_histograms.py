"""Histogram tests: exceedances, the time-uniform DKW band, the bucket-shift test, PSI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cutover.analysis import BucketShiftTest, QuantileBand, dkw_epsilon, exceedances, psi
from cutover.analysis.histograms import stochastically_larger

EDGES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # prometheus_client defaults


def cumulative(samples: np.ndarray) -> np.ndarray:
    """Cumulative bucket counts as Prometheus exports them (finite edges, then +Inf)."""
    return np.array([np.sum(samples <= e) for e in EDGES] + [len(samples)], float)


def test_exceedances_count_observations_above_an_edge() -> None:
    events, trials = exceedances(EDGES, cumulative(np.array([0.02, 0.07, 0.3, 0.3, 12.0])), 0.25)
    assert (events, trials) == (3, 5)


def test_threshold_between_edges_is_refused() -> None:
    with pytest.raises(ValueError, match="not a bucket edge"):
        exceedances(EDGES, cumulative(np.array([0.1])), 0.3)


def test_dkw_band_width_matches_the_published_figure() -> None:
    """Howard & Ramdas: about twice the fixed-n DKW width; 0.0284 at n = 10^4, alpha = 0.025."""
    assert float(dkw_epsilon(10_000, 0.025)) == pytest.approx(0.0284, abs=0.001)
    assert float(dkw_epsilon(40_000, 0.025)) < float(dkw_epsilon(10_000, 0.025)) / 1.8


def test_quantile_bounds_hold_at_every_look() -> None:
    rng = np.random.default_rng(5)
    true_p99 = math.exp(math.log(0.1) + 0.6 * 2.326)  # lognormal, median 100 ms, sigma 0.6
    misses = 0
    for _ in range(200):
        band = QuantileBand(EDGES, alpha=0.05)
        for _ in range(30):
            band.update(cumulative(rng.lognormal(math.log(0.1), 0.6, 500)))
            q = band.quantile(0.99)
            if not q.lower < true_p99 <= q.upper:
                misses += 1
                break
    assert misses <= 10


def test_slower_candidate_is_proven_stochastically_larger() -> None:
    rng = np.random.default_rng(2)
    candidate, baseline = QuantileBand(EDGES, 0.05), QuantileBand(EDGES, 0.05)
    for _ in range(20):
        candidate.update(cumulative(rng.lognormal(math.log(0.15), 0.6, 1500)))
        baseline.update(cumulative(rng.lognormal(math.log(0.1), 0.6, 1500)))
    assert stochastically_larger(candidate, baseline)
    assert not stochastically_larger(baseline, candidate)


def bucket_shift_alarms(shift: float, runs: int = 300, seed: int = 9) -> float:
    rng = np.random.default_rng(seed)
    base = np.array([0.05, 0.1, 0.15, 0.3, 0.4])
    moved = np.roll(base, 1) * shift + base * (1 - shift)
    alarms = 0
    for _ in range(runs):
        test = BucketShiftTest(len(base), alpha=0.05)
        for _ in range(40):
            test.update(rng.multinomial(500, moved), 500, rng.multinomial(500, base), 500)
            if test.rejected():
                alarms += 1
                break
    return alarms / runs


def test_bucket_shift_test_is_valid_under_the_null() -> None:
    assert bucket_shift_alarms(0.0) < 0.05


def test_bucket_shift_test_detects_a_moved_distribution() -> None:
    assert bucket_shift_alarms(0.3, runs=50) > 0.95


def test_psi() -> None:
    assert psi([100, 100, 100], [100, 100, 100]) == pytest.approx(0.0)
    assert psi([10, 100, 190], [190, 100, 10]) > 0.25
