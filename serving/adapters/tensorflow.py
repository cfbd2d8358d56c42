"""TensorFlow SavedModel: a directory written by ``tf.saved_model.save`` (or Keras'
``model.export``), served through its ``serving_default`` signature, the one TensorFlow Serving
and Triton call by default. Other signatures are not served: no ModelDeployment field names one.

The signature describes itself: its inputs are the keyword arguments of the signature function,
its outputs the keys of the dictionary it returns, each with a dtype and a shape (``None``, an
unknown dimension, is -1). ``tf.string`` is BYTES, passed to the model as the raw bytes the
client sent. Inputs that disagree on their first dimension and that the model refuses are a
400 (``InvalidInput``); any other refusal is a model failure. A tensor of unknown rank, or of a
type the protocol cannot carry (bfloat16, complex, resource), fails the load rather than every
request. TensorFlow is imported on load, so other formats never pay for it (the ``tensorflow``
extra installs it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput
from .base import DATATYPES_BY_DTYPE_NAME, LocalAdapter, TensorInfo

log = logging.getLogger("cutover.serving")

SIGNATURE = "serving_default"
"""The signature served (``tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY``)."""

_DATATYPES = {**DATATYPES_BY_DTYPE_NAME, "string": "BYTES"}
"""Protocol datatypes by ``tf.DType.name``."""


def _info(kind: str, name: str, spec: Any) -> TensorInfo:
    """The protocol view of one signature tensor (a ``tf.TensorSpec``); ``kind`` names it in errors."""
    if spec.dtype.name not in _DATATYPES:
        raise ValueError(f"signature {SIGNATURE} {kind} {name!r} is {spec.dtype.name}, which the protocol cannot carry")
    if spec.shape.rank is None:
        raise ValueError(f"signature {SIGNATURE} {kind} {name!r} has no known rank; export it with a shape")
    return TensorInfo(name, _DATATYPES[spec.dtype.name], tuple(-1 if d is None else d for d in spec.shape.as_list()))


class TensorFlowAdapter(LocalAdapter):
    """Runs the ``serving_default`` signature of the SavedModel directory ``path``.

    ``threads`` sizes TensorFlow's intra-op pool (0: TensorFlow's default, one thread per core);
    the inter-op pool has one thread, as the ONNX adapter runs its graph sequentially: one batch
    reaches the model at a time and its ops share the intra-op threads. ``device="cpu"`` hides
    GPUs; otherwise TensorFlow places ops on a GPU when its build has CUDA and one is visible.
    TensorFlow takes these settings once per process, before its first op: when TensorFlow
    already runs with other settings (a fallback baseline asking for the same is fine), they stay
    and a warning says so. Raises ValueError on load when ``path`` is not a SavedModel, has no
    serving signature, or one of its tensors has no protocol datatype or no known rank.
    """

    platform = "tensorflow_savedmodel"

    def __init__(self, path: Path, *, threads: int = 0, device: str = "auto") -> None:
        super().__init__()
        self.path = path
        self.threads = threads
        self.device = device
        self._model: Any = None
        self._signature: Any = None
        self._invalid_argument: type[Exception] = Exception

    def load_sync(self) -> None:
        import tensorflow as tf

        if not tf.saved_model.contains_saved_model(str(self.path)):
            raise ValueError(
                f"{self.path} is not a TensorFlow SavedModel: format tensorflow needs the directory "
                "that tf.saved_model.save wrote (with saved_model.pb)"
            )
        try:
            tf.config.threading.set_intra_op_parallelism_threads(self.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            if self.device == "cpu":
                tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow has run an op in this process, with other settings
            log.warning("TensorFlow is already running here: its thread pools and devices stay as they are")
        # The loaded object owns the variables the signature reads: it is kept as long as the signature.
        self._model = tf.saved_model.load(str(self.path))
        if SIGNATURE not in self._model.signatures:
            found = ", ".join(self._model.signatures) or "none"
            raise ValueError(f"SavedModel {self.path} has no {SIGNATURE} signature (it has: {found})")
        self._signature = self._model.signatures[SIGNATURE]
        self._invalid_argument = tf.errors.InvalidArgumentError
        _, inputs = self._signature.structured_input_signature
        self.inputs = [_info("input", name, spec) for name, spec in inputs.items()]
        self.outputs = [_info("output", name, spec) for name, spec in self._signature.structured_outputs.items()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self._signature(**inputs)
        except self._invalid_argument:
            # Each input passed validation alone; inputs that disagree on their first dimension are the
            # client's mistake, not the model's. Otherwise a model that refuses its input fails (500),
            # as an ONNX model does, so a revision that refuses every request is rolled back.
            rows = {name: array.shape[0] for name, array in inputs.items() if array.ndim}
            if len(set(rows.values())) < 2:
                raise
            sizes = ", ".join(f"{name!r} has {count}" for name, count in rows.items())
            raise InvalidInput(f"the inputs disagree on their first (batch) dimension: {sizes}") from None
        return {name: tensor.numpy() for name, tensor in results.items()}
