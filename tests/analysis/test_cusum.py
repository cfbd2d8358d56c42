"""Post-promotion CUSUM: rare false alarms, fast detection (scenario B8 of the benchmark)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cutover.analysis import BinomialCusum


def test_in_control_run_length_is_long() -> None:
    """With h = ln 100 the average run length is at least 100 intervals (Lorden)."""
    rng = np.random.default_rng(1)
    cusum = BinomialCusum(p0=0.01, shift=2.0, h=math.log(100), batch=(500,))
    for _ in range(300):
        cusum.update(rng.binomial(1500, 0.01, 500), 1500)
    alarm_times = np.where(cusum.alarmed, cusum.alarmed_at, np.inf)
    # P(alarm within 300 intervals) for a geometric-ish run length of mean >= 100 is <= ~0.95;
    # in practice it is far lower. The median run length must exceed 100.
    assert np.median(alarm_times) > 100


def test_doubled_error_rate_alarms_within_two_intervals() -> None:
    rng = np.random.default_rng(2)
    cusum = BinomialCusum(p0=0.01, shift=2.0, h=math.log(1000), batch=(500,))
    for _ in range(20):
        cusum.update(rng.binomial(1500, 0.02, 500), 1500)
    assert cusum.alarmed.all()
    assert np.median(cusum.alarmed_at) <= 2


@pytest.mark.parametrize(("p0", "shift"), [(0.0, 2.0), (0.01, 1.0)])
def test_meaningless_settings_are_refused(p0: float, shift: float) -> None:
    with pytest.raises(ValueError):
        BinomialCusum(p0=p0, shift=shift)
