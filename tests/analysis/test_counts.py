"""Validity and power of the stratified rate-ratio test, on small fixed-seed simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cutover.analysis import RateRatioTest

RUNS, INTERVALS = 1000, 60  # 30 minutes of 30-second intervals


def simulate(
    ratio: float,
    *,
    rate: float = 50 * 30,
    p: float = 0.01,
    alpha: float = 0.05,
    seed: int = 7,
    shares: np.ndarray | None = None,
    bursts: bool = False,
    **kwargs: object,
) -> dict[str, np.ndarray]:
    """Rollouts of INTERVALS intervals: total traffic ``2 * rate`` per interval split by ``shares``
    (candidate share per interval; 0.5 by default). Returns when each run first failed/passed."""
    rng = np.random.default_rng(seed)
    test = RateRatioTest(alpha, alpha, batch=(RUNS,), evidence=False, **kwargs)
    failed_at = np.full(RUNS, np.inf)
    passed_at = np.full(RUNS, np.inf)
    for t in range(INTERVALS):
        share = 0.5 if shares is None else shares[t]
        total = rng.poisson(2 * rate, RUNS)
        n_c = rng.binomial(total, share)
        n_b = total - n_c
        base = p * (5.0 if bursts and t >= INTERVALS - 10 and t % 3 == 0 else 1.0)
        test.update(rng.binomial(n_c, min(1.0, base * ratio)), n_c, rng.binomial(n_b, base), n_b)
        failed_at = np.where(test.failed() & np.isinf(failed_at), (t + 1) * 30.0, failed_at)
        passed_at = np.where(test.passed() & np.isinf(passed_at), (t + 1) * 30.0, passed_at)
    return {"failed": failed_at, "passed": passed_at}


def rate(times: np.ndarray) -> float:
    return float(np.mean(np.isfinite(times)))


def test_aa_false_rollbacks_stay_below_alpha() -> None:
    out = simulate(1.0, alpha=0.05)
    assert rate(out["failed"]) < 0.05 * 0.6  # expected about 1.5%


def test_traffic_ramp_with_shared_error_bursts_does_not_fool_it() -> None:
    """Weights 5 -> 10 -> 25 -> 50% and 5x error bursts hitting both arms late: a pooled test
    blames the candidate; the stratified one does not."""
    shares = np.repeat([0.05, 0.10, 0.25, 0.50], INTERVALS // 4)
    out = simulate(1.0, alpha=0.05, shares=shares, bursts=True)
    assert rate(out["failed"]) < 0.05

    rng = np.random.default_rng(7)  # the same traffic through a naive pooled comparison
    errors_c = errors_b = n_c_all = n_b_all = np.zeros(RUNS)
    pooled_alarm = np.zeros(RUNS, bool)
    for t in range(INTERVALS):
        total = rng.poisson(3000, RUNS)
        n_c = rng.binomial(total, shares[t])
        n_b = total - n_c
        p = 0.01 * (5.0 if t >= INTERVALS - 10 and t % 3 == 0 else 1.0)
        errors_c, errors_b = errors_c + rng.binomial(n_c, p), errors_b + rng.binomial(n_b, p)
        n_c_all, n_b_all = n_c_all + n_c, n_b_all + n_b
        pooled = (errors_c + errors_b) / (n_c_all + n_b_all)
        z = (errors_c / n_c_all - errors_b / n_b_all) / np.sqrt(pooled * (1 - pooled) * (1 / n_c_all + 1 / n_b_all))
        pooled_alarm |= z > 1.645
    assert pooled_alarm.mean() > 0.5


def test_doubled_error_rate_is_caught_within_three_minutes() -> None:
    out = simulate(2.0, alpha=0.01)
    assert rate(out["failed"]) > 0.99
    assert np.median(out["failed"]) <= 120


def test_promotion_is_rare_at_the_pass_margin() -> None:
    """A candidate exactly at 1 + passMargin must be promoted with probability at most alpha."""
    out = simulate(1.2, alpha=0.05, pass_margin=0.2, p=0.05)
    assert rate(out["passed"]) < 0.05


def test_equal_candidate_is_promoted() -> None:
    out = simulate(1.0, alpha=0.05, pass_margin=0.5)
    assert rate(out["passed"]) > 0.95
    assert np.median(out["passed"]) <= 300


def test_failure_margin_tolerates_small_regressions() -> None:
    out = simulate(1.1, alpha=0.05, failure_margin=0.25, p=0.05)
    assert rate(out["failed"]) < 0.05


def test_decrease_direction_fails_on_fewer_events() -> None:
    """With direction decrease the events are good things (say, confident predictions)."""
    out = simulate(0.5, p=0.2, direction="decrease")
    assert rate(out["failed"]) > 0.99
    assert rate(simulate(1.0, p=0.2, direction="decrease")["failed"]) < 0.05


def test_either_direction_catches_a_drop() -> None:
    """A safety filter whose hit rate collapses may be broken: either direction catches it."""
    assert rate(simulate(0.3, p=0.05, direction="either")["failed"]) > 0.99
    assert rate(simulate(0.3, p=0.05, direction="increase")["failed"]) == 0


def test_confidence_sequence_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(3)
    misses = 0
    for _ in range(60):
        test = RateRatioTest(0.05, 0.05)
        for _ in range(30):
            test.update(rng.binomial(1500, 0.03), 1500, rng.binomial(1500, 0.02), 1500)
            bounds = test.bounds()
            if not bounds.lower <= 1.5 <= bounds.upper:
                misses += 1
                break
    assert misses <= 3


def test_bounds_cross_the_margins_when_the_decisions_do() -> None:
    rng = np.random.default_rng(11)
    test = RateRatioTest(0.01, 0.01, failure_margin=0.0, pass_margin=0.2)
    step = 0.026  # one grid step in ratio terms
    for _ in range(40):
        test.update(rng.binomial(1500, 0.02), 1500, rng.binomial(1500, 0.01), 1500)
        lower = test.bounds().lower
        if lower > 1.0 + step:
            assert test.failed()
        if test.failed():
            assert lower >= 1.0 - step
    assert test.failed() and test.bounds().lower > 1.0
    assert 1.6 < float(test.estimate()) < 2.5


def test_no_events_decides_nothing() -> None:
    test = RateRatioTest(0.01, 0.01)
    for _ in range(10):
        test.update(0, 1000, 0, 1000)
    assert not test.failed() and not test.passed()
    assert math.isnan(float(test.estimate()))
    assert test.bounds().lower == 0.0 and math.isinf(test.bounds().upper)


def test_one_arm_without_traffic_carries_no_evidence() -> None:
    test = RateRatioTest(0.01, 0.01)
    test.update(0, 0, 50, 1000)
    test.update(50, 1000, 0, 0)
    assert float(test.log_e_fail()) == pytest.approx(0.0)


@pytest.mark.parametrize(("events", "trials"), [(-1, 10), (11, 10)])
def test_impossible_counts_are_refused(events: int, trials: int) -> None:
    with pytest.raises(ValueError, match="between 0 and the trial counts"):
        RateRatioTest(0.01, 0.01).update(events, trials, 0, 10)


def test_alpha_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        RateRatioTest(0.0, 0.01)
