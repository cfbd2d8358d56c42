"""Out-of-distribution scoring: how far each input row lies from the training data, as the
Mahalanobis distance from the training mean under the training covariance, or by an extra ONNX
model shipped beside the main one and run in the same onnxruntime (``model.outOfDistribution.method``):
an isolation forest or an autoencoder's reconstruction error (:class:`OnnxScorer`).

A model answers confidently even on inputs unlike anything it was trained on; the distance lets
the server count such inputs (``cutover_out_of_distribution_total``) and a rollout's analysis
notice when production traffic drifts away from the training set. The statistics are computed
offline and shipped as JSON, ``{"mean": [...], "covariance": [[...]]}`` or, already inverted,
``{"mean": [...], "precision": [[...]]}``. Comparing a score with the threshold is the caller's
business.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from cutover.api.v1alpha1.modeldeployment import OutOfDistributionMethod


class ScorerError(ValueError):
    """The input does not fit the statistics (its feature count differs)."""


class Scorer(Protocol):
    """Scores rows [n, features]: higher is further from the training data."""

    features: int

    def score(self, rows: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class OodCheck:
    """A scorer and the score above which a row counts as out of distribution."""

    scorer: Scorer
    threshold: float


def training_threshold(statistics: Mapping[str, Any], method: OutOfDistributionMethod) -> float:
    """The statistics file's threshold for ``method``: ``{"thresholds": {"autoencoder": 0.013}}``.
    Raises ValueError, saying what to set, when it has none or it is not a positive number."""
    thresholds = statistics.get("thresholds", {})
    value = thresholds.get(method) if isinstance(thresholds, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"set outOfDistribution.threshold, or 'thresholds': {{{method!r}: <a positive number>}} in the training "
            f"statistics (found {value!r})"
        )
    return float(value)


def _matrix(rows: np.ndarray, features: int) -> np.ndarray:
    """``rows`` as [n, features] float64: higher-rank input [n, ...] flattened per row, a 1-D input
    one row. Raises :class:`ScorerError` for a scalar or another feature count."""
    array = np.asarray(rows, dtype=np.float64)
    if array.ndim == 0:
        raise ScorerError("input is a scalar; out-of-distribution scoring needs rows of features")
    matrix = array.reshape(1, -1) if array.ndim == 1 else array.reshape(array.shape[0], -1)
    if matrix.shape[1] != features:
        raise ScorerError(f"input has {matrix.shape[1]} features per row; the training statistics describe {features}")
    return matrix


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
        centred = _matrix(rows, self.features) - self.mean
        squared = np.einsum("ij,jk,ik->i", centred, self.precision, centred)
        # Rounding can take a distance of ~0 just below zero.
        result: np.ndarray = np.sqrt(np.maximum(squared, 0.0))
        return result


_ONNX_FLOATS = {"tensor(float)": np.float32, "tensor(double)": np.float64}
ISOLATION_FOREST_SCORES = "scores"
"""The output of skl2onnx's IsolationForest converter the isolation forest scorer reads:
scikit-learn's ``decision_function`` (positive inside the forest's boundary)."""


class OnnxScorer:
    """Scores rows with an extra ONNX model (``model.outOfDistribution.modelUri``) in onnxruntime,
    the runtime the main model runs in; no scikit-learn or torch at serve time.

    ``isolationForest``: an ``sklearn.ensemble.IsolationForest`` converted by skl2onnx (one float
    input [n, features]; its ``scores`` output is ``decision_function``). The score is
    0.5 - decision_function: 0.5 on the forest's own boundary (set by its ``contamination``), and
    with ``contamination="auto"`` exactly the anomaly score s(x) = 2^(-E[h(x)] / c(n)) of Liu, Ting
    and Zhou, "Isolation Forest" (ICDM 2008), in (0, 1]: near 1 isolated at once, below 0.5 normal.

    ``autoencoder``: any model whose one output reconstructs its one input [n, features] (a small
    torch model exported with ``torch.onnx.export``). The score is the mean squared reconstruction
    error per feature, ||x - AE(x)||^2 / features, in the input's squared units; a threshold is
    usually a high quantile (99th) of the training rows' errors.

    A row with a NaN or infinite value scores NaN (beyond any threshold), as the Mahalanobis
    distance does. Raises ValueError at construction for a file onnxruntime cannot load, and for
    a model whose inputs or outputs do not fit ``features`` or a batch of rows (it is run once on
    two rows of zeros)."""

    def __init__(self, path: str, method: OutOfDistributionMethod, features: int) -> None:
        import onnxruntime as ort  # the serving extra's runtime, as adapters/onnx.py

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # rows are scored on the request's path, beside the model's own threads
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for missing and invalid files
            raise ValueError(f"cannot load the {method} model {path}: {error}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type not in _ONNX_FLOATS:
            found = [(i.name, i.type) for i in inputs]
            raise ValueError(f"the {method} model {path} must have one float input [n, features]; it has {found}")
        self.input, self.dtype = inputs[0].name, _ONNX_FLOATS[inputs[0].type]
        names = [o.name for o in self.session.get_outputs()]
        if method == "isolationForest":
            if ISOLATION_FOREST_SCORES not in names:
                raise ValueError(
                    f"the isolationForest model {path} has outputs {names}, not {ISOLATION_FOREST_SCORES!r} "
                    "(convert an sklearn IsolationForest with skl2onnx)"
                )
            self.output = ISOLATION_FOREST_SCORES
        elif len(names) != 1:
            raise ValueError(f"the autoencoder model {path} must have one output (the reconstruction); it has {names}")
        else:
            self.output = names[0]
        self.method, self.features = method, features
        try:  # two rows: a model exported with a fixed batch of one scores one row and fails on more
            self.score(np.zeros((2, features)))
        except Exception as error:
            raise ValueError(
                f"the {method} model {path} does not score a batch of rows of {features} features (its batch "
                f"dimension must be free, as torch.onnx.export's dynamic_axes make it): {error}"
            ) from None

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Each row's score, shape [n], as the class says; ``rows`` as for
        :meth:`MahalanobisScorer.score`. Raises :class:`ScorerError` for another feature count."""
        matrix = _matrix(rows, self.features)
        (answer,) = self.session.run([self.output], {self.input: matrix.astype(self.dtype)})
        out = np.asarray(answer, dtype=np.float64)
        if self.method == "isolationForest":
            scores: np.ndarray = 0.5 - out.reshape(matrix.shape[0])
        else:
            scores = np.mean((matrix - out.reshape(matrix.shape)) ** 2, axis=1)
        scores[~np.isfinite(matrix).all(axis=1)] = np.nan
        return scores


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
