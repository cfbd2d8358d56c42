"""Input drift: how far the live distribution of each input feature has moved from the training
distribution, per revision, from the rows serving counts per bin of the training data's edges
(``cutover_input_feature_rows_total``) and the training share of each bin
(``cutover_input_feature_reference``), both exported by each revision's own pods: a candidate
trained on other data is measured against its own training data.

Two numbers per feature, from the same bins:

* the population stability index, PSI = sum_b (p_b - q_b) ln(p_b / q_b) of the live shares p
  against the training shares q (the symmetrised Kullback-Leibler divergence; by convention
  below 0.1 is no shift, 0.1-0.25 moderate, above 0.25 large). An empty bin would make it
  infinite: live shares are taken as (count + 0.5) / (rows + 0.5 bins) and training shares are
  floored at 1e-4, which moves a PSI of 0.1 by less than 0.01 at 1,000 rows over 10 bins;
* the one-sample Kolmogorov-Smirnov statistic D = max_b |F_live(e_b) - F_train(e_b)| at the bin
  edges, tested with the exact distribution of D for the rows seen (``scipy.stats.kstwo``, as
  ``scipy.stats.ks_1samp``). Correction for binning: D at the edges is at most the D of the
  unbinned rows, and the KS distribution of a continuous reference is conservative for a
  discrete one (Conover, "A Kolmogorov Goodness-of-Fit Test for Discontinuous Distributions",
  JASA 1972), so the p-value is never smaller than it should be: binning costs power, never
  false alarms.

A feature fails when both say so: its PSI is above the limit (``thresholdRange.max``: large
samples make any shift significant, the limit says which shifts matter) and its KS p-value is
below the corrected level (small samples make PSI noisy; under no drift its expectation is about
(bins - 1) / rows). Correction for many features and many looks: Bonferroni, the metric's alpha
share divided by the number of features and, at the k-th interval read, by k (k + 1), whose sum
over k is 1. Bonferroni and not Benjamini-Hochberg because the gate's claim is "some feature
drifted", a family-wise one: BH bounds the expected share of false discoveries among the
features it flags, which does not bound the chance of rolling back a revision whose inputs did
not drift at all, and features are correlated in any direction, where Bonferroni stays valid
under any dependence. The same split over looks makes the re-read every interval valid too
(the counts are cumulative, so each look is a new test of the same hypothesis).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .judges import Decision, Evidence, JudgeSettings

SMOOTHING = 0.5
"""Pseudo-count added to each live bin before the PSI."""
REFERENCE_FLOOR = 1e-4
"""Smallest training share the PSI divides by."""


def population_stability_index(counts: Sequence[float] | np.ndarray, reference: Sequence[float]) -> float:
    """PSI of live ``counts`` per bin [bins] against training ``reference`` shares [bins] (summing
    to 1), smoothed as the module says. Raises ValueError for different lengths or no bins."""
    observed, expected = np.asarray(counts, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if observed.shape != expected.shape or observed.ndim != 1 or observed.size == 0:
        raise ValueError(f"counts {list(observed.shape)} and reference {list(expected.shape)} must be equal-length")
    live = (observed + SMOOTHING) / (observed.sum() + SMOOTHING * observed.size)
    train = np.maximum(expected, REFERENCE_FLOOR)
    train = train / train.sum()
    return float(np.sum((live - train) * np.log(live / train)))


def binned_ks(counts: Sequence[float] | np.ndarray, reference: Sequence[float]) -> tuple[float, float]:
    """The Kolmogorov-Smirnov statistic D of live ``counts`` per bin against the training
    ``reference`` shares, at the bin edges, and its p-value for ``sum(counts)`` rows (1.0 for
    none). Conservative for binned data, as the module says."""
    observed, expected = np.asarray(counts, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    rows = float(observed.sum())
    if rows <= 0:
        return 0.0, 1.0
    live = np.cumsum(observed)[:-1] / rows
    train = np.cumsum(expected)[:-1]
    statistic = float(np.max(np.abs(live - train), initial=0.0))
    # Imported here, not with the module: scipy.stats costs the operator about 50 MB of resident
    # memory (tests/operator/test_operator_footprint.py), which only an inputDrift metric needs.
    from scipy import stats  # type: ignore[import-untyped]  # scipy ships no stubs

    return statistic, float(stats.kstwo.sf(statistic, round(rows)))


@dataclass(frozen=True)
class FeatureCounts:
    """One interval of one arm: rows per bin by feature, and the training shares by feature."""

    rows: Mapping[str, tuple[float, ...]]
    reference: Mapping[str, tuple[float, ...]]


@dataclass(frozen=True)
class FeatureDrift:
    """One feature of one arm so far."""

    feature: str
    rows: int
    psi: float
    ks: float
    p_value: float


class InputDriftJudge:
    """Input drift of the candidate against its training data, per feature, with the
    corrections the module describes; the baseline's worst feature is reported beside it.

    ``fail`` once some feature's PSI is above ``thresholdRange.max`` and its KS p-value below the
    corrected level; ``pass`` once every feature has ``minSamples`` rows and none fails;
    ``inconclusive`` before."""

    def __init__(self, name: str, settings: JudgeSettings) -> None:
        self.name, self.critical = name, settings.critical
        self.limit = settings.threshold_max
        self.alpha = settings.alpha_share
        self.looks = 0
        self.arms: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {})
        self.reference: tuple[dict[str, tuple[float, ...]], dict[str, tuple[float, ...]]] = ({}, {})

    def update_features(self, candidate: FeatureCounts, baseline: FeatureCounts) -> None:
        """Add one interval. Raises ValueError when a feature's bins changed count (a revision
        restarted with other statistics cannot be: a revision's statistics are fixed)."""
        for totals, references, read in zip(self.arms, self.reference, (candidate, baseline), strict=True):
            for feature, per_bin in read.rows.items():
                counts = np.asarray(per_bin, dtype=np.float64)
                if feature in totals and totals[feature].shape != counts.shape:
                    raise ValueError(f"feature {feature!r} had {totals[feature].size} bins and now has {counts.size}")
                totals[feature] = totals.get(feature, np.zeros_like(counts)) + counts
            references.update(read.reference)
        self.looks += 1

    def drift(self, arm: int) -> list[FeatureDrift]:
        """Each feature of arm 0 (candidate) or 1 (baseline), worst PSI first."""
        out = []
        for feature, counts in self.arms[arm].items():
            reference = self.reference[arm].get(feature)
            if reference is None or len(reference) != counts.size:
                continue
            statistic, p = binned_ks(counts, reference)
            out.append(
                FeatureDrift(feature, int(counts.sum()), population_stability_index(counts, reference), statistic, p)
            )
        return sorted(out, key=lambda d: -d.psi)

    def level(self, features: int) -> float:
        """The KS level each feature is tested at now: Bonferroni over features and looks."""
        return self.alpha / max(features, 1) / (max(self.looks, 1) * (max(self.looks, 1) + 1))

    def evidence(self, min_samples: int) -> Evidence:
        candidate, baseline = self.drift(0), self.drift(1)
        rows_c = min((d.rows for d in candidate), default=0)
        rows_b = min((d.rows for d in baseline), default=0)
        worst_c = candidate[0] if candidate else None

        def said(decision: Decision, reason: str) -> Evidence:
            return Evidence(
                self.name, decision, reason, self.critical, rows_c, rows_b, worst_c.psi if worst_c else None
            )

        def text(drifts: list[FeatureDrift]) -> str:
            if not drifts:
                return "no feature read"
            d = drifts[0]
            return f"feature {d.feature!r} PSI {d.psi:.3g}, KS D {d.ks:.3g} (p {d.p_value:.2g})"

        summary = f"largest input drift: candidate {text(candidate)}; baseline {text(baseline)}"
        if self.limit is None:  # the API requires thresholdRange.max for inputDrift
            return said("inconclusive", f"{summary}; no thresholdRange.max to judge it against")
        level = self.level(len(candidate))
        drifted = [d for d in candidate if d.psi > self.limit and d.p_value < level]
        if drifted:
            names = ", ".join(f"{d.feature!r} (PSI {d.psi:.3g}, KS p {d.p_value:.2g})" for d in drifted)
            return said(
                "fail",
                f"input drift of the candidate from its training data: {names} above thresholdRange.max "
                f"{self.limit:.3g} at KS level {level:.2g}; {summary}",
            )
        if not candidate or rows_c < min_samples:
            return said("inconclusive", f"{rows_c} of {min_samples} rows per feature so far; {summary}")
        return said("pass", f"{summary}: no feature beyond thresholdRange.max {self.limit:.3g} at KS level {level:.2g}")
