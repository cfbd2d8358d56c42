"""Out-of-distribution scoring: how far each input row lies from the training data, as the
Mahalanobis distance from the training mean under the training covariance.

A model answers confidently even on inputs unlike anything it was trained on; the distance lets
the server count such inputs (``cutover_out_of_distribution_total``) and a rollout's analysis
notice when production traffic drifts away from the training set. The statistics are computed
offline and shipped as JSON, ``{"mean": [...], "covariance": [[...]]}`` or, already inverted,
``{"mean": [...], "precision": [[...]]}``. Comparing a score with the threshold is the caller's
business.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np


class ScorerError(ValueError):
    """The input does not fit the statistics (its feature count differs)."""


class MahalanobisScorer:
    """Scores rows against training statistics; ``features`` is the feature count they describe.

    A singular covariance (a constant feature, or more features than training rows) has no inverse;
    it is regularised with ``ridge`` times its mean variance on the diagonal and pseudo-inverted, so
    the directions the training data never varied in score as very far rather than failing.
    """

    def __init__(self, statistics: Mapping[str, Any], *, ridge: float = 1e-6) -> None:
        if "mean" not in statistics:
            raise ValueError("statistics need a 'mean' (a list of feature means)")
        mean = _array(statistics["mean"], "mean")
        if mean.ndim != 1 or mean.size == 0:
            raise ValueError(f"'mean' must be a non-empty list of numbers, got shape {list(mean.shape)}")
        features = mean.size
        if "precision" in statistics:
            self.precision = _square(statistics["precision"], "precision", features)
        elif "covariance" in statistics:
            self.precision = _invert(_square(statistics["covariance"], "covariance", features), ridge)
        else:
            raise ValueError("statistics need a 'covariance' or a 'precision' (inverse covariance) matrix")
        self.mean = mean
        self.features = features

    def score(self, rows: np.ndarray) -> np.ndarray:
        """The distance of each row, shape [n]. ``rows`` is [n, features]; higher-rank input
        [n, ...] is flattened per row, and a 1-D input is one row."""
        array = np.asarray(rows, dtype=np.float64)
        if array.ndim == 0:
            raise ScorerError("input is a scalar; out-of-distribution scoring needs rows of features")
        matrix = array.reshape(1, -1) if array.ndim == 1 else array.reshape(array.shape[0], -1)
        if matrix.shape[1] != self.features:
            raise ScorerError(
                f"input has {matrix.shape[1]} features per row; the training statistics describe {self.features}"
            )
        centred = matrix - self.mean
        squared = np.einsum("ij,jk,ik->i", centred, self.precision, centred)
        # Rounding can take a distance of ~0 just below zero.
        result: np.ndarray = np.sqrt(np.maximum(squared, 0.0))
        return result


def _array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name!r} must hold numbers only: {error}") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{name!r} holds NaN or infinite values")
    return array


def _square(value: Any, name: str, features: int) -> np.ndarray:
    matrix = _array(value, name)
    if matrix.shape != (features, features):
        raise ValueError(f"{name!r} must be {features}x{features} to match 'mean', got shape {list(matrix.shape)}")
    scale = max(float(np.abs(matrix).max()), 1.0)
    if not np.allclose(matrix, matrix.T, rtol=1e-6, atol=1e-9 * scale):
        raise ValueError(f"{name!r} must be symmetric")
    symmetric: np.ndarray = (matrix + matrix.T) / 2
    if np.linalg.eigvalsh(symmetric).min() < -1e-8 * scale:
        raise ValueError(f"{name!r} must be positive semi-definite (it has a negative eigenvalue)")
    return symmetric


def _invert(covariance: np.ndarray, ridge: float) -> np.ndarray:
    eigenvalues = np.linalg.eigvalsh(covariance)
    largest = float(eigenvalues.max())
    if largest > 0 and eigenvalues.min() > largest * covariance.shape[0] * np.finfo(np.float64).eps:
        inverse: np.ndarray = np.linalg.inv(covariance)
        return inverse
    variance = float(np.trace(covariance)) / covariance.shape[0]
    regularised = covariance + np.eye(covariance.shape[0]) * ridge * (variance if variance > 0 else 1.0)
    pseudo: np.ndarray = np.linalg.pinv(regularised, hermitian=True)
    return pseudo


def load_statistics(uri: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """The statistics JSON object at ``uri``: a local path, ``file://``, or ``http(s)://``."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("http", "https"):
        try:
            response = httpx.get(uri, timeout=timeout, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise ValueError(f"cannot fetch out-of-distribution statistics from {uri}: {error}") from None
        text = response.text
    elif scheme in ("", "file"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(uri).path)) if scheme == "file" else Path(uri)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"cannot read out-of-distribution statistics {uri}: {error.strerror or error}") from None
    else:
        raise ValueError(
            f"out-of-distribution statistics {uri}: {scheme}:// is not supported; use a path, file:// or http(s)://"
        )
    try:
        statistics = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"out-of-distribution statistics {uri} are not JSON: {error}") from None
    if not isinstance(statistics, dict):
        raise ValueError(f"out-of-distribution statistics {uri} must be a JSON object with 'mean' and 'covariance'")
    return statistics
