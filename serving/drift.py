"""Input drift: each scored row's features binned on the training data's bin edges, so the
analysis can compare the live distribution of every feature with the training one (population
stability index and a Kolmogorov-Smirnov test, ``cutover.analysis.drift``).

The training statistics file (the one ``model.outOfDistribution.statisticsUri`` names) may hold,
beside ``mean`` and ``covariance``::

    "histograms": {
        "edges":       [[e1, ..., ek], null, ...],   # per feature: increasing bin edges, or null
        "proportions": [[p0, ..., pk], null, ...]    # per feature: training share of each bin
    }

one entry per feature (as many as ``mean`` has). Bin 0 holds values at or below ``e1``, bin i
values in ``(ei, ei+1]``, the last bin values above ``ek`` (Prometheus' ``le`` convention).
Deciles of the training column are the usual edges (PSI's ten bins); a feature whose entry is
null is not watched. At most ``INPUT_DRIFT_MAX_FEATURES`` features and ``INPUT_DRIFT_MAX_BINS``
bins each, so a pod exports at most 32 x 10 children of each drift series; a file beyond that is
refused at load, naming the limit. Each pod exports the proportions too
(``cutover_input_feature_reference``): a candidate trained on other data is measured against its
own training data, not the stable revision's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cutover.api.contract import INPUT_DRIFT_MAX_BINS, INPUT_DRIFT_MAX_FEATURES


@dataclass(frozen=True)
class FeatureBins:
    """One watched feature: its column in the flattened row, label, edges [bins - 1] and the
    training share of each bin [bins]."""

    column: int
    name: str
    edges: np.ndarray
    proportions: tuple[float, ...]


class InputBinning:
    """Bins rows [n, features] on the training statistics' edges."""

    def __init__(self, features: Sequence[FeatureBins]) -> None:
        self.features = tuple(features)

    @classmethod
    def parse(cls, statistics: Mapping[str, Any], names: Sequence[str], features: int) -> InputBinning | None:
        """The ``histograms`` of ``statistics`` (None without them) for rows of ``features``
        columns named ``names`` (their indices when empty). Raises ValueError, saying what is
        wrong, for entries of another count, two watched features of one name, edges that do not
        increase or are not finite, proportions that are negative or do not sum to 1, and more
        features or bins than the limits."""
        block = statistics.get("histograms")
        if block is None:
            return None
        if not isinstance(block, dict) or not {"edges", "proportions"} <= block.keys():
            raise ValueError("'histograms' in the training statistics needs 'edges' and 'proportions'")
        edges, proportions = block["edges"], block["proportions"]
        if not isinstance(edges, list) or not isinstance(proportions, list):
            raise ValueError("'histograms.edges' and 'histograms.proportions' must be lists, one entry per feature")
        if len(edges) != features or len(proportions) != features:
            raise ValueError(
                f"'histograms' has {len(edges)} edges and {len(proportions)} proportions entries; the training "
                f"statistics have {features} features"
            )
        watched = []
        for column, (edge, share) in enumerate(zip(edges, proportions, strict=True)):
            if edge is None and share is None:
                continue
            name = names[column] if names else str(column)
            watched.append(_feature(column, name, edge, share))
        seen = [f.name for f in watched]
        if len(set(seen)) != len(seen):
            twice = sorted({name for name in seen if seen.count(name) > 1})
            raise ValueError(f"'features' names {twice} more than once; each watched feature needs its own series")
        if len(watched) > INPUT_DRIFT_MAX_FEATURES:
            raise ValueError(
                f"'histograms' watches {len(watched)} features; at most {INPUT_DRIFT_MAX_FEATURES} (set the others "
                "to null), so the drift series stay bounded"
            )
        return cls(watched) if watched else None

    def counts(self, rows: np.ndarray) -> list[tuple[FeatureBins, np.ndarray]]:
        """Each watched feature's rows per bin, from ``rows`` [n, features] (float64). NaN values
        are in no bin; -inf is in the first and +inf in the last."""
        out = []
        for feature in self.features:
            column = rows[:, feature.column]
            column = column[~np.isnan(column)]
            bins = np.searchsorted(feature.edges, column, side="left")
            out.append((feature, np.bincount(bins, minlength=len(feature.proportions))))
        return out


def _feature(column: int, name: str, edges: Any, proportions: Any) -> FeatureBins:
    where = f"'histograms' of feature {name!r}"
    try:
        edge_array = np.asarray(edges, dtype=np.float64)
        shares = np.asarray(proportions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: edges and proportions must be lists of numbers") from None
    if edge_array.ndim != 1 or shares.ndim != 1 or not 1 <= edge_array.size < INPUT_DRIFT_MAX_BINS:
        raise ValueError(f"{where}: edges must be a list of 1 to {INPUT_DRIFT_MAX_BINS - 1} numbers")
    if shares.size != edge_array.size + 1:
        raise ValueError(f"{where}: {edge_array.size} edges make {edge_array.size + 1} bins, not {shares.size}")
    if not np.isfinite(edge_array).all() or (np.diff(edge_array) <= 0).any():
        raise ValueError(f"{where}: edges must be finite and strictly increasing")
    if not np.isfinite(shares).all() or (shares < 0).any() or abs(float(shares.sum()) - 1.0) > 1e-6:
        raise ValueError(f"{where}: proportions must be non-negative and sum to 1, got sum {float(shares.sum()):g}")
    return FeatureBins(column, name, edge_array, tuple(float(s) for s in shares))
