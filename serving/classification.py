"""Triton's classification extension: a requested output with ``parameters.classification = N``
is answered as its top N classes instead of its values.

Each row of the output (the first dimension, when the model's output has a batch dimension;
else the whole output is one row) is flattened and its N largest values become BYTES elements
``"value:index"``, or ``"value:index:label"`` when the output has labels (Triton's
``label_filename``, here ``labelFilename`` on a declared output, read by ``serving/loading.py``),
largest first, equal values by lower index. The result has shape ``[rows, N]`` (``[N]`` without a
batch dimension); N is capped at the number of classes, as Triton does. A value is written as
C++'s ``std::to_string`` writes it (six decimals for floating point), so answers match Triton's.

Source: Triton's ``docs/protocol/extension_classification.md``. Only numeric outputs can be
classified; asking it of a BYTES output is an ``InvalidInput`` (400).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from .errors import InvalidInput
from .protocol import RequestedOutput


def classify(array: np.ndarray, count: int, labels: Sequence[str] = (), *, batched: bool = True) -> np.ndarray:
    """The top ``count`` classes of each row of ``array`` as an object array of ``bytes``
    ("value:index[:label]"): shape ``[rows, min(count, classes)]`` when ``batched`` (the first
    dimension is the batch), else ``[min(count, classes)]``. ``labels[i]`` names class i; an
    index past the labels, or with an empty line, has none. Raises ``InvalidInput`` for a
    non-numeric ``array``."""
    if array.dtype.kind not in "biuf":
        raise InvalidInput(f"classification needs a numeric output, not {array.dtype}")
    # The row length is given, not inferred (-1): numpy cannot infer it for an empty batch.
    rows = (
        array.reshape(array.shape[0], math.prod(array.shape[1:]))
        if batched and array.ndim > 1
        else array.reshape(1, -1)
    )
    top = min(count, rows.shape[1])
    # Largest first; a stable sort of the negated values keeps equal values in index order, and
    # NaN (negated, still NaN) sorts last.
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :top]
    integral = array.dtype.kind in "biu"
    answer = np.empty((rows.shape[0], top), dtype=object)
    for r, indices in enumerate(order):
        for c, index in enumerate(indices.tolist()):
            value = rows[r, index]
            text = f"{int(value)}:{index}" if integral else f"{float(value):f}:{index}"
            if index < len(labels) and labels[index]:
                text = f"{text}:{labels[index]}"
            answer[r, c] = text.encode()
    return answer if batched and array.ndim > 1 else answer.reshape(top)


def classified(
    outputs: Mapping[str, np.ndarray],
    requested: Sequence[RequestedOutput] | None,
    labels: Mapping[str, Sequence[str]],
    unbatched: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """``outputs`` with each output the request asked to classify replaced by its top classes;
    ``labels`` by output name, ``unbatched`` the names of outputs the model declares without a
    batch dimension (one row each). An output the request names but the model lacks is left for
    ``select_outputs`` to refuse."""
    answer = dict(outputs)
    for wanted in requested or ():
        if wanted.classification is not None and wanted.name in answer:
            try:
                answer[wanted.name] = classify(
                    answer[wanted.name],
                    wanted.classification,
                    labels.get(wanted.name, ()),
                    batched=wanted.name not in unbatched,
                )
            except InvalidInput as error:
                raise InvalidInput(f"output {wanted.name!r}: {error}") from None
    return answer
