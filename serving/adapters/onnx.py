"""ONNX Runtime: the CPU provider, and CUDA first when the installed build has it and a GPU is visible."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput
from .base import LocalAdapter, TensorInfo

_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _info(node: Any) -> TensorInfo:
    if node.type not in _TYPES:
        raise ValueError(f"ONNX {node.name!r} has type {node.type}, which the protocol cannot carry")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorInfo(node.name, _TYPES[node.type], shape)


class OnnxAdapter(LocalAdapter):
    platform = "onnx_onnxv1"

    def __init__(self, path: Path, *, threads: int = 0, device: str = "auto") -> None:
        super().__init__()
        self.path = path
        self.threads = threads
        self.device = device
        self.providers: list[str] = []
        self._session: Any = None
        self._explaining: Any = None
        self._explaining_lock = threading.Lock()

    def load_sync(self) -> None:
        self._session = self._new_session(self.threads)
        self.providers = self._session.get_providers()
        self.inputs = [_info(node) for node in self._session.get_inputs()]
        self.outputs = [_info(node) for node in self._session.get_outputs()]
        self._output_names = [t.name for t in self.outputs]
        self._strings = {t.name for t in self.inputs if t.datatype == "BYTES"}

    def _new_session(self, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CPUExecutionProvider"]
        if self.device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        return ort.InferenceSession(str(self.path), options, providers=providers)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run(self._session, inputs)

    def _run(self, session: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: _texts(name, value) if name in self._strings else value for name, value in inputs.items()}
        results = session.run(self._output_names, feed)
        return dict(zip(self._output_names, results, strict=True))

    def explanation_run(self) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
        """A second session of the model with one intra-op thread, made on first use: an
        explanation's thousands of rows neither queue behind nor share threads with inference."""
        with self._explaining_lock:
            if self._explaining is None:
                self._explaining = self._new_session(1)
        return functools.partial(self._run, self._explaining)


def _texts(name: str, array: np.ndarray) -> np.ndarray:
    """A BYTES input as the ``str`` elements an ONNX string tensor takes. Raises ``InvalidInput``
    (400) for an element that is not UTF-8: the client's input, not a failure of the model."""
    try:
        texts: np.ndarray = np.vectorize(lambda element: element.decode(), otypes=[object])(array)
    except UnicodeDecodeError as error:
        raise InvalidInput(
            f"input {name!r} holds an element that is not UTF-8 text ({error.reason} at byte {error.start}); "
            "the model's string tensor takes text"
        ) from None
    return texts
