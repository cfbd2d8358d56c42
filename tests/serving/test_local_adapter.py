"""Where a local model runs: inline on the event loop while its calls are tiny, on its worker
thread otherwise (serving/adapters/base.py's LocalAdapter)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from cutover.serving.adapters.base import LocalAdapter


class Echo(LocalAdapter):
    """A model that answers its inputs at once and notes the thread it ran on."""

    platform = "test_echo"

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def load_sync(self) -> None:
        pass

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        return dict(inputs)


async def test_a_large_call_leaves_the_event_loop_however_fast_the_calls_before_it() -> None:
    adapter = Echo()
    loop_thread = threading.current_thread().name
    for _ in range(3):
        await adapter.infer({"x": np.zeros((1, 4), np.float32)})
    assert adapter.threads[0] != loop_thread and adapter.threads[-1] == loop_thread  # timed, then inline
    await adapter.infer({"x": np.zeros((100_000, 4), np.float32)})
    assert adapter.threads[-1] != loop_thread
    await adapter.close()
