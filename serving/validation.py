"""Inputs checked against the declared schema before the model sees them: names, datatypes,
shapes and value ranges. Every failure is an ``InvalidInput`` (400) that says which input and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .adapters.base import TensorInfo
from .errors import InvalidInput
from .protocol import datatype_of


def validate(inputs: Mapping[str, np.ndarray], schema: Sequence[TensorInfo], *, batched: bool = False) -> None:
    """Raise ``InvalidInput`` (400) unless ``inputs`` are exactly the inputs ``schema`` declares,
    each of the declared datatype, shape (-1: any) and value range. ``batched``: the model runs
    requests merged along the first dimension (dynamic batching), so every input must have one
    and all must agree on it; a request whose inputs disagree would be cut into rows that belong
    to other clients' requests."""
    expected = {t.name: t for t in schema}
    for name in inputs:
        if name not in expected:
            raise InvalidInput(f"unknown input {name!r}; the model takes {', '.join(expected)}")
    if len(inputs) != len(expected):  # every input is known, so one the model takes is missing
        missing = next(name for name in expected if name not in inputs)
        raise InvalidInput(f"missing input {missing!r}; the model takes {', '.join(expected)}")
    for name, array in inputs.items():
        check(array, expected[name])
    if batched:
        rows = {name: array.shape[0] if array.ndim else None for name, array in inputs.items()}
        if len(set(rows.values())) > 1 or None in rows.values():
            told = ", ".join(f"{name!r} {'is a scalar' if n is None else f'has {n}'}" for name, n in rows.items())
            raise InvalidInput(
                f"inputs disagree on the batch (first) dimension: {told}; every input of a batching model "
                "takes the same number of rows"
            )


def check(array: np.ndarray, spec: TensorInfo) -> None:
    """Raise ``InvalidInput`` (400) unless ``array`` has the datatype, shape and value range of
    ``spec``."""
    datatype = datatype_of(array)
    if datatype != spec.datatype:
        raise InvalidInput(f"input {spec.name!r} is {datatype}; the model takes {spec.datatype}")
    shape = array.shape
    if len(shape) != len(spec.shape) or not all(d == -1 or d == got for d, got in zip(spec.shape, shape, strict=True)):
        raise InvalidInput(f"input {spec.name!r} has shape {list(shape)}; the model takes {list(spec.shape)} (-1: any)")
    if (spec.min is None and spec.max is None) or not array.size:
        return
    where = f"input {spec.name!r}"
    values = array.astype(np.float64, copy=False)
    if np.isnan(values).any():
        raise InvalidInput(f"{where} contains NaN; the model takes values in [{spec.min}, {spec.max}]")
    low, high = float(values.min()), float(values.max())
    if spec.min is not None and low < spec.min:
        raise InvalidInput(f"{where} has {low:g}, below the declared minimum {spec.min:g}")
    if spec.max is not None and high > spec.max:
        raise InvalidInput(f"{where} has {high:g}, above the declared maximum {spec.max:g}")
