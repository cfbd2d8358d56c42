"""Attribution shift: whether the candidate relies on other features than the stable revision
does, on the same live traffic, from the rows each revision's pods explain in the background
(``runtime.explain.sampleRate``) counted by their most attributed feature
(``cutover_attribution_top_feature_total{feature}``). Stable is the reference, not the training
data: the question is whether the new revision reasons differently from the one it replaces.

Each sampled row adds one count to one feature, so a revision's counts are a multinomial sample
and the two revisions' counts are a 2 x F contingency table. Two numbers from it:

* the total variation distance between the two revisions' top-feature shares,
  TV = 1/2 sum_f |p_f - q_f|: the share of rows whose most attributed feature would have to
  change to turn one distribution into the other (0: the same, 1: no feature in common), the
  effect size judged against ``thresholdRange.max``;
* Pearson's chi-square test of homogeneity of the table, with F' - 1 degrees of freedom over the
  F' features either revision counted (``scipy.stats.chi2_contingency`` without Yates'
  correction computes the same), its p-value against the metric's alpha share split over looks
  as the other drift tests do: at the k-th interval read, alpha / (k (k + 1)), whose sum over k
  is alpha, so re-reading the cumulative counts every interval keeps the family-wise error.

The candidate fails when both say so (a large shift that is not noise); it passes once both
revisions have ``minSamples`` explained rows and it does not fail. The chi-square approximation
needs expected counts of about 5 per cell: ``minSamples`` of a few times the feature count
gives that for every feature that carries a real share of the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# scipy.special, not scipy.stats, which costs the operator about 50 MB of resident memory
# (tests/operator/test_operator_footprint.py); chdtrc is the chi-square's survival function.
from scipy.special import chdtrc  # type: ignore[import-untyped]  # scipy ships no stubs

from .judges import Decision, Evidence, JudgeSettings


def total_variation(candidate: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray) -> float:
    """Total variation distance between two count vectors' shares (same features in the same
    order), 0 when either has no counts. Raises ValueError for different lengths."""
    c, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if c.shape != b.shape or c.ndim != 1:
        raise ValueError(f"counts {list(c.shape)} and {list(b.shape)} must be equal-length vectors")
    if c.sum() <= 0 or b.sum() <= 0:
        return 0.0
    return float(0.5 * np.abs(c / c.sum() - b / b.sum()).sum())


def homogeneity(candidate: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square statistic of the 2 x F table of two count vectors and its p-value,
    over the features either counted; (0, 1) when either vector is empty or fewer than two
    features were counted. Raises ValueError for different lengths."""
    table = np.stack([np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)])
    if table.ndim != 2:
        raise ValueError("counts must be equal-length vectors")
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or (rows <= 0).any():
        return 0.0, 1.0
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return statistic, float(chdtrc(table.shape[1] - 1, statistic))


class AttributionShiftJudge:
    """Attribution shift of the candidate from the baseline (stable), as the module says.

    ``fail`` once the total variation distance is above ``thresholdRange.max`` and the chi-square
    p-value below the corrected level; ``pass`` once both arms have ``minSamples`` explained
    rows and it does not fail; ``inconclusive`` before."""

    def __init__(self, name: str, settings: JudgeSettings) -> None:
        self.name, self.critical = name, settings.critical
        self.limit = settings.threshold_max
        self.alpha = settings.alpha_share
        self.looks = 0
        self.arms: tuple[dict[str, float], dict[str, float]] = ({}, {})

    def update_top_features(self, candidate: Mapping[str, float], baseline: Mapping[str, float]) -> None:
        """Add one interval: each arm's explained rows by their most attributed feature."""
        for totals, read in zip(self.arms, (candidate, baseline), strict=True):
            for feature, count in read.items():
                totals[feature] = totals.get(feature, 0.0) + count
        self.looks += 1

    def level(self) -> float:
        """The chi-square level now: the alpha share over looks k (k + 1)."""
        looks = max(self.looks, 1)
        return self.alpha / (looks * (looks + 1))

    def evidence(self, min_samples: int) -> Evidence:
        features = sorted(set(self.arms[0]) | set(self.arms[1]))
        candidate = np.array([self.arms[0].get(f, 0.0) for f in features])
        baseline = np.array([self.arms[1].get(f, 0.0) for f in features])
        rows_c, rows_b = int(candidate.sum()), int(baseline.sum())
        distance = total_variation(candidate, baseline) if features else 0.0
        statistic, p = homogeneity(candidate, baseline) if features else (0.0, 1.0)
        level = self.level()

        def top(counts: np.ndarray) -> str:
            return repr(features[int(np.argmax(counts))]) if counts.sum() > 0 else "none"

        summary = (
            f"most attributed feature: candidate {top(candidate)}, baseline {top(baseline)} over {rows_c} and "
            f"{rows_b} explained rows; total variation {distance:.3g}, chi-square {statistic:.3g} (p {p:.2g})"
        )

        def said(decision: Decision, reason: str) -> Evidence:
            return Evidence(self.name, decision, reason, self.critical, rows_c, rows_b, distance)

        if self.limit is None:  # the API requires thresholdRange.max for attributionShift
            return said("inconclusive", f"{summary}; no thresholdRange.max to judge it against")
        if distance > self.limit and p < level:
            return said(
                "fail",
                f"the candidate relies on other features than the baseline: {summary}, above thresholdRange.max "
                f"{self.limit:.3g} at level {level:.2g}",
            )
        if min(rows_c, rows_b) < min_samples:
            return said("inconclusive", f"{min(rows_c, rows_b)} of {min_samples} explained rows per arm; {summary}")
        return said("pass", f"{summary}: not beyond thresholdRange.max {self.limit:.3g} at level {level:.2g}")
