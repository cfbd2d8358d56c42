"""Post-promotion watch: CUSUM on a promoted revision's event rate.

After promotion there is no control arm left, so the question changes from "is the candidate
worse than stable?" to "has this revision's rate moved up from where it was when we promoted
it?". Page's CUSUM with a binomial log-likelihood ratio per interval answers that:

    S_t = max(0, S_{t-1} + y_t log(p1/p0) + (n_t - y_t) log((1-p1)/(1-p0)))

alarming once S_t >= h. With likelihood-ratio increments the in-control average run length is
at least e^h intervals (Lorden 1971), so h = ln 1000 means about one false alarm per thousand
intervals (8 hours at 30 s), and the delay to detect a shift to p1 is about h / KL(p1 || p0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass
class BinomialCusum:
    """One-sided CUSUM for a rise of an event rate from ``p0`` to ``p1`` (or beyond).

    ``p0`` is the rate measured before promotion (the candidate's rate during the rollout);
    ``shift`` the smallest relative rise worth an alarm; ``h`` the threshold (ln of the wanted
    in-control run length in intervals). Batch shapes work as in the sequential tests."""

    p0: float
    shift: float = 2.0
    h: float = math.log(1000)
    batch: tuple[int, ...] = ()
    statistic: NDArray[np.float64] = field(init=False)
    alarmed_at: NDArray[np.float64] = field(init=False)
    intervals: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not 0 < self.p0 < 1:
            raise ValueError("p0 must lie in (0, 1); measure it over enough requests before promotion")
        if self.shift <= 1:
            raise ValueError("shift must be above 1 (a rise)")
        self.p1 = min(self.p0 * self.shift, 0.999999)
        self._log_hit = math.log(self.p1 / self.p0)
        self._log_miss = math.log((1 - self.p1) / (1 - self.p0))
        self.statistic = np.zeros(self.batch)
        self.alarmed_at = np.full(self.batch, np.nan)

    def update(self, events: ArrayLike, trials: ArrayLike) -> NDArray[np.bool_]:
        """Add one interval; return whether the alarm is raised (it stays raised)."""
        y, n = np.asarray(events, float), np.asarray(trials, float)
        self.intervals += 1
        self.statistic = np.maximum(0.0, self.statistic + y * self._log_hit + (n - y) * self._log_miss)
        alarm = self.statistic >= self.h
        self.alarmed_at = np.where(alarm & np.isnan(self.alarmed_at), self.intervals, self.alarmed_at)
        out: NDArray[np.bool_] = ~np.isnan(self.alarmed_at)
        return out

    @property
    def alarmed(self) -> NDArray[np.bool_]:
        out: NDArray[np.bool_] = ~np.isnan(self.alarmed_at)
        return out
