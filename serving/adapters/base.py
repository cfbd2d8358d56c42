"""The one interface every model adapter implements.

An adapter knows how to load one model and run it: locally (ONNX Runtime, PyTorch) or by
calling a remote server (Triton, an OpenAI-compatible LLM). The server around it owns the
protocol, validation, batching, fallbacks and metrics, so an adapter stays small. An adapter
reports failures with the named errors of ``serving/errors.py``: ``InvalidInput`` when the model
or its upstream refuses the input, ``UpstreamError`` when an upstream fails; anything else it
raises is a model failure (500).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import NotSupported
from ..protocol import DATATYPES

DATATYPES_BY_DTYPE_NAME = {dtype.name: datatype for datatype, dtype in DATATYPES.items() if datatype != "BYTES"}
"""Protocol datatypes by the name of their numpy type (``"float32"``: ``"FP32"``), the name
TensorFlow's ``tf.DType.name`` and PyTorch's ``str(torch.dtype)`` (less ``torch.``) give too."""


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, protocol datatype, shape (-1 = any size), value range."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    min: float | None = None
    max: float | None = None

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Adapter(abc.ABC):
    """Loads one model revision and answers inference requests for it."""

    platform: ClassVar[str]
    """Model metadata's platform string, ``<project>_<format>``."""

    inputs: Sequence[TensorInfo] = ()
    outputs: Sequence[TensorInfo] = ()

    @abc.abstractmethod
    async def load(self) -> None:
        """Load the model (or reach the upstream); fills ``inputs`` and ``outputs``."""

    @abc.abstractmethod
    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on one (possibly batched) set of named inputs."""

    async def chat(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """An OpenAI-style chat completion; only language models have it."""
        raise NotSupported("this model takes tensors; chat completions need an llm model")

    def chat_stream(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """An OpenAI-style chat completion streamed: its ``chat.completion.chunk`` objects in
        order; only language models have it."""
        raise NotSupported("this model takes tensors; chat completions need an llm model")

    not_ready_reason: str | None = None
    """Why ``ready()`` last answered False, when the adapter knows (what its upstream answered)."""

    async def ready(self) -> bool:
        """Whether the model can answer now (remote adapters ask their upstream)."""
        return True

    async def close(self) -> None:  # noqa: B027 - most adapters hold nothing to release
        """Release what load() took."""

    @property
    def batchable(self) -> bool:
        """Whether requests can be concatenated along the first dimension."""
        return bool(self.inputs) and all(t.shape[:1] == (-1,) for t in (*self.inputs, *self.outputs))


class LocalAdapter(Adapter):
    """A model run in this process.

    A model call that takes longer than INLINE_SECONDS runs on one worker thread, so the event loop
    keeps accepting and batching requests while the model computes (ONNX Runtime and PyTorch
    release the GIL) and the runtime's own intra-op threads are not oversubscribed. A model that
    answers faster than that runs inline on the event loop: handing a 10 µs call to a thread costs
    more than the call (measured in benchmarks/serving.py), and the loop is blocked no longer than
    the hand-off would take. The choice follows a moving average of the call time, so a model that
    slows down moves to the thread by itself; a call whose inputs hold more than INLINE_BYTES goes
    to the thread whatever the average (a large batch after many small ones would otherwise hold
    the loop, and the health probes with it, for as long as the model takes).
    """

    INLINE_SECONDS = 0.0005
    INLINE_BYTES = 64 << 10

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.platform}-infer")
        self._average = float("inf")
        """Moving average of the model call time; infinite until the first call has been timed."""

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Synchronous inference (on the event loop or the worker thread)."""

    @abc.abstractmethod
    def load_sync(self) -> None:
        """Synchronous loading on the worker thread."""

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load_sync)

    def _timed(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            return self.run(inputs)
        finally:
            took = time.perf_counter() - started
            self._average = took if self._average == float("inf") else 0.9 * self._average + 0.1 * took

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._average < self.INLINE_SECONDS and sum(a.nbytes for a in inputs.values()) <= self.INLINE_BYTES:
            return self._timed(inputs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, inputs)

    def explanation_run(self) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
        """The model as explanations run it (``serving/explain.py``), on their own threads
        beside the one worker that answers inference: ``run`` by default (PyTorch modules and
        TensorFlow functions may be called from several threads at once)."""
        return self.run

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
