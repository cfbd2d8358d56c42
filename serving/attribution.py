"""Feature attributions, nearest training examples and counterfactuals, in numpy: the arithmetic of
the explain endpoint (``serving/explain.py``), free of HTTP and of any model runtime.

A model is seen here as a function of rows: ``[n, M]`` float64 features in, ``[n, K]`` float64
values out (every output it explains, flattened per row and side by side). Shapley values follow
the interventional definition (Lundberg and Lee, "A Unified Approach to Interpreting Model
Predictions", NeurIPS 2017; the value of a coalition S is the model's mean over background rows
whose features in S are replaced by the explained row's)::

    v(S) = mean_b f(x_S, b_{~S})        phi_i = sum_{S without i} |S|! (M-|S|-1)! / M! (v(S+i) - v(S))

:func:`exact_shapley` enumerates all 2^M coalitions (few features); :func:`sampled_shapley`
averages the marginal contributions along random feature orders, each drawn with its reverse
(antithetic sampling, Mitchell et al., "Sampling Permutations for Shapley Value Estimation",
JMLR 2022), which is exactly additive by construction. Both evaluate the model in batches of at
most ``CHUNK_ROWS`` rows and check their deadline between batches, raising
:class:`DeadlineExceeded` when it passed; both report how many model rows they evaluated.

:class:`Exemplars` holds training examples shipped in the training-statistics file, whitened
with the statistics' precision matrix so that Euclidean distance between whitened rows is the
Mahalanobis distance ``serving/ood.py`` scores with; neighbours are found by brute force (0.6 ms
for 10,000 exemplars of 30 features, per ``reference/explainability.md``). Only ids, distances
and labels leave this module, never an exemplar's row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RowModel = Callable[[np.ndarray], np.ndarray]
"""A model as attributions see it: rows [n, M] float64 in, values [n, K] float64 out."""

CHUNK_ROWS = 16_384
"""The most rows one model call evaluates: bounds the memory of a call (rows x features floats)
and how far past its deadline an explanation can run (one call)."""
EXACT_MAX_FEATURES = 16
"""Beyond this many features exact enumeration is refused (2^16 coalitions times the background)."""


class DeadlineExceeded(Exception):
    """The computation passed its deadline between two model calls; ``evaluations`` rows were spent."""

    def __init__(self, evaluations: int) -> None:
        super().__init__(f"deadline passed after {evaluations} model rows")
        self.evaluations = evaluations


@dataclass(frozen=True)
class Attribution:
    """Attributions of one row: ``values`` [M, K] (feature by model value), ``baseline`` [K] (the
    model's mean over the background: v of the empty coalition), ``prediction`` [K] (f(x)),
    ``evaluations`` (model rows evaluated), ``samples`` (feature orders drawn; None when exact)."""

    values: np.ndarray
    baseline: np.ndarray
    prediction: np.ndarray
    evaluations: int
    samples: int | None = None

    @property
    def residual(self) -> np.ndarray:
        """The additivity residual [K]: f(x) - baseline - sum of the attributions (0 for exact
        Shapley values up to rounding)."""
        residual: np.ndarray = self.prediction - self.baseline - self.values.sum(axis=0)
        return residual


class Evaluations:
    """Model rows evaluated so far, against a deadline (``time.monotonic()`` seconds)."""

    def __init__(self, model: RowModel, deadline: float) -> None:
        self.model = model
        self.deadline = deadline
        self.evaluations = 0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """The model's values [n, K] of ``rows`` [n, M], in calls of at most CHUNK_ROWS rows.
        Raises DeadlineExceeded before a call when the deadline has passed."""
        parts = []
        for start in range(0, len(rows), CHUNK_ROWS):
            if time.monotonic() > self.deadline:
                raise DeadlineExceeded(self.evaluations)
            chunk = rows[start : start + CHUNK_ROWS]
            parts.append(np.asarray(self.model(chunk), dtype=np.float64).reshape(len(chunk), -1))
            self.evaluations += len(chunk)
        return np.concatenate(parts) if parts else np.zeros((0, 0))


def _coalition_values(evaluate: Evaluations, x: np.ndarray, background: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """v(S) [S, K] for each coalition mask [S, M] (True: the feature is x's)."""
    values = []
    per_call = max(1, CHUNK_ROWS // len(background))
    for start in range(0, len(masks), per_call):
        part = masks[start : start + per_call]
        rows = np.where(part[:, None, :], x[None, None, :], background[None, :, :])  # [s, k, M]
        out = evaluate(rows.reshape(-1, x.size))
        values.append(out.reshape(len(part), len(background), -1).mean(axis=1))
    return np.concatenate(values)


def exact_shapley(model: RowModel, x: np.ndarray, background: np.ndarray, deadline: float) -> Attribution:
    """Exact Shapley values of row ``x`` [M] against ``background`` [k, M]: 2^M x k model rows.
    Raises ValueError beyond EXACT_MAX_FEATURES features, DeadlineExceeded past ``deadline``."""
    features = x.size
    if features > EXACT_MAX_FEATURES:
        raise ValueError(f"exact Shapley values of {features} features take 2^{features} coalitions")
    evaluate = Evaluations(model, deadline)
    index = np.arange(1 << features)
    masks = ((index[:, None] >> np.arange(features)) & 1).astype(bool)
    values = _coalition_values(evaluate, x, background, masks)
    sizes = masks.sum(axis=1)
    weights = np.array(
        [math.factorial(s) * math.factorial(features - s - 1) / math.factorial(features) for s in range(features)]
    )
    attributions = np.empty((features, values.shape[1]))
    for feature in range(features):
        without = index[~masks[:, feature]]
        gains = values[without | (1 << feature)] - values[without]
        attributions[feature] = weights[sizes[without]] @ gains
    return Attribution(attributions, values[0], values[-1], evaluate.evaluations)


def sampled_shapley(
    model: RowModel, x: np.ndarray, background: np.ndarray, pairs: int, seed: int, deadline: float
) -> Attribution:
    """Shapley values of row ``x`` [M] against ``background`` [k, M] estimated from ``pairs``
    random feature orders and their reverses: 2 x pairs x (M + 1) x k model rows, exactly
    additive. The orders are drawn and evaluated a few at a time, as many as one model call
    takes, so memory does not grow with ``pairs`` (all at once, their coalition masks alone were
    2 x pairs x (M + 1) x M bytes, built before the first deadline check). Raises
    DeadlineExceeded past ``deadline``, ValueError when ``pairs`` is below 1."""
    features = x.size
    rng = np.random.default_rng(seed)
    evaluate = Evaluations(model, deadline)
    per_block = max(1, CHUNK_ROWS // (2 * (features + 1) * len(background)))
    coalition_sizes = np.arange(features + 1)
    sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # attributions [M, K], v(empty), v(all)
    for start in range(0, pairs, per_block):
        forward = np.array([rng.permutation(features) for _ in range(min(per_block, pairs - start))])
        orders = np.concatenate([forward, forward[:, ::-1]])  # [P, M]
        ranks = np.argsort(orders, axis=1)  # the position of each feature in each order
        # Coalition j of an order holds its first j features: feature i is in it when its rank < j.
        masks = ranks[:, None, :] < coalition_sizes[None, :, None]  # [P, M+1, M]
        values = _coalition_values(evaluate, x, background, masks.reshape(-1, features))
        values = values.reshape(len(orders), features + 1, -1)
        if sums is None:
            sums = (np.zeros((features, values.shape[2])), np.zeros(values.shape[2]), np.zeros(values.shape[2]))
        attributions, empty, full = sums
        gains = values[:, 1:] - values[:, :-1]  # [P, M, K]: what each order's j-th feature adds
        for order, gain in zip(orders, gains, strict=True):
            attributions[order] += gain
        empty += values[:, 0].sum(axis=0)
        full += values[:, -1].sum(axis=0)
    if sums is None:
        raise ValueError(f"sampled Shapley values need at least one pair of orders, not {pairs}")
    drawn = 2 * pairs
    return Attribution(sums[0] / drawn, sums[1] / drawn, sums[2] / drawn, evaluate.evaluations, drawn)


def _whitening(precision: np.ndarray) -> np.ndarray:
    """W with W W^T = precision, so that ||(a - b) W|| is the Mahalanobis distance of a and b
    (an eigendecomposition: a pseudo-inverted precision may be only semi-definite)."""
    eigenvalues, vectors = np.linalg.eigh(precision)
    whitening: np.ndarray = vectors * np.sqrt(np.maximum(eigenvalues, 0.0))
    return whitening


@dataclass(frozen=True)
class Exemplars:
    """Training examples: ``ids`` [N] and ``labels`` [N] (None when the file has none) as given,
    ``rows`` [N, M], and ``whitened`` rows [N, M] for distances."""

    ids: Sequence[str]
    labels: Sequence[Any] | None
    rows: np.ndarray
    whitened: np.ndarray
    whitening: np.ndarray

    @classmethod
    def parse(cls, statistics: Mapping[str, Any], precision: np.ndarray) -> Exemplars | None:
        """The statistics file's optional ``exemplars`` ``{"ids": [...], "rows": [[...]],
        "labels": [...]}`` (None without one), checked against the ``precision`` matrix [M, M].
        Raises ValueError for rows of another width, non-finite rows, or ids or labels whose
        count differs from the rows'."""
        found = statistics.get("exemplars")
        if found is None:
            return None
        if not isinstance(found, Mapping) or "rows" not in found or "ids" not in found:
            raise ValueError("'exemplars' must be an object with 'ids' and 'rows' (and optionally 'labels')")
        try:
            rows = np.asarray(found["rows"], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"exemplars 'rows' must be a list of rows of numbers: {error}") from None
        features = precision.shape[0]
        if rows.ndim != 2 or rows.shape[1] != features or not len(rows):
            raise ValueError(f"exemplars 'rows' must be a non-empty [N, {features}] list, got shape {list(rows.shape)}")
        if not np.isfinite(rows).all():
            raise ValueError("exemplars 'rows' hold NaN or infinite values")
        ids, labels = [str(i) for i in found["ids"]], found.get("labels")
        if len(ids) != len(rows) or (labels is not None and len(labels) != len(rows)):
            raise ValueError(f"exemplars need one id (and label, if any) per row: {len(rows)} rows")
        whitening = _whitening(precision)
        return cls(ids, list(labels) if labels is not None else None, rows, rows @ whitening, whitening)

    def distances(self, x: np.ndarray) -> np.ndarray:
        """The Mahalanobis distance [N] of row ``x`` [M] to each exemplar."""
        distances: np.ndarray = np.linalg.norm(self.whitened - x @ self.whitening, axis=1)
        return distances

    def describe(self, index: int, distance: float) -> dict[str, Any]:
        """What an answer may say of exemplar ``index``: its id, distance and label, never its row."""
        return {
            "id": self.ids[index],
            "distance": distance,
            "label": self.labels[index] if self.labels is not None else None,
        }

    def nearest(self, x: np.ndarray, count: int) -> list[dict[str, Any]]:
        """The ``count`` exemplars nearest to ``x`` [M], nearest first (described)."""
        distances = self.distances(x)
        count = min(count, len(distances))
        closest = np.argpartition(distances, count - 1)[:count]
        return [self.describe(int(i), float(distances[i])) for i in closest[np.argsort(distances[closest])]]


def counterfactual(
    classify: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    exemplars: Exemplars,
    exemplar_classes: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    features: Sequence[str],
    steps: int = 16,
) -> dict[str, Any] | None:
    """A counterfactual of row ``x`` [M]: the nearest exemplar the model puts in another class
    (``classify``: rows [n, M] -> classes [n]; ``exemplar_classes`` [N] its classes of the
    exemplars), then moved back toward ``x`` while the class stays changed: a grid search along
    the segment from ``x`` (two calls of ``steps`` rows), then one feature at a time returned to
    ``x``'s value where that keeps the class (DiCE's greedy sparsity idea, Mothilal et al.,
    FAT* 2020). Every row tried lies within [``low``, ``high``] per feature (the declared input
    ranges). None when every exemplar is in ``x``'s class. Returns the exemplar (described), the
    classes before and after, the changed features (name, from, to), the Mahalanobis distance
    from ``x``, and the model rows evaluated."""
    original = int(classify(x[None])[0])
    others = np.flatnonzero(exemplar_classes != original)
    if not len(others):
        return None
    distances = exemplars.distances(x)
    chosen = int(others[np.argmin(distances[others])])
    target = np.clip(exemplars.rows[chosen], low, high)
    evaluations = 1
    start, end = 0.0, 1.0
    for _ in range(2):  # the first flipping point on a grid, then on a finer grid before it
        grid = np.linspace(start, end, steps + 1)[1:]
        classes = classify(x + grid[:, None] * (target - x))
        evaluations += steps
        flipped = np.flatnonzero(classes != original)
        if not len(flipped):
            break
        first = int(flipped[0])
        start, end = (grid[first - 1] if first else start), grid[first]
    found = x + end * (target - x)
    changed = np.flatnonzero(found != x)
    scale = np.linalg.norm(
        exemplars.whitening, axis=1
    )  # each feature's standard units (sqrt of the precision's diagonal)
    for feature in changed[np.argsort(np.abs(found - x)[changed] * scale[changed])]:  # the smallest changes first
        trial = found.copy()
        trial[feature] = x[feature]
        evaluations += 1
        if int(classify(trial[None])[0]) != original:
            found = trial
    new_class = int(classify(found[None])[0])
    evaluations += 1
    return {
        "exemplar": exemplars.describe(chosen, float(distances[chosen])),
        "class": original,
        "counterfactual_class": new_class,
        "valid": new_class != original,
        "changes": [
            {"feature": features[i], "from": float(x[i]), "to": float(found[i])}
            for i in map(int, np.flatnonzero(found != x))
        ],
        "distance": float(np.linalg.norm((found - x) @ exemplars.whitening)),
        "model_evaluations": evaluations,
    }
