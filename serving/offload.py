"""Decoding and encoding of large bodies in a worker process, so that they never hold the event loop.

A 66 MB JSON request takes about a second to parse here, and parsing holds the GIL the whole time
(json's C parser and numpy's conversion of nested lists never release it), so a thread does not
help: measured, the event loop of a server decoding on a thread still stalled 0.9 s, and every
coroutine with it, health probes included (the kubelet gives ``/v2/health/live`` one second,
``PROBE_TIMEOUT_SECONDS``). A body of ``threshold`` bytes or more is therefore decoded, and an
answer whose tensors hold that many bytes encoded, in a worker process; the loop then holds the
GIL only to pickle the body and unpickle the arrays (memory copies: 50 ms for that body). Smaller
bodies are decoded inline, where the hand-off would cost more than the work.

The workers start on first use (most servers never see a large body and pay nothing), from a
forkserver that has imported ``protocol.py``: nothing of this process's threads (the model
runtime's, the executor's) is forked. A worker that dies (killed for memory, say) fails only
the requests it held, with ``Overloaded`` (503, retry later); the next large body starts a new one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from .errors import Overloaded

T = TypeVar("T")

LARGE_BYTES = 1 << 20
"""Bodies of this many bytes or more leave the event loop: about 15 ms of JSON decoding here,
against about 1 ms for the hand-off to a process."""
WORKERS = 2
"""Worker processes at most, each started when a large body finds the others busy."""


class Offload:
    """Runs a module-level function (its arguments and result picklable) inline when ``size`` is
    below ``threshold`` bytes, else in a worker process. Close with :meth:`close`."""

    def __init__(self, threshold: int = LARGE_BYTES, workers: int = WORKERS) -> None:
        self.threshold = threshold
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()

    async def run(self, size: int, function: Callable[..., T], *args: object) -> T:
        """``function(*args)``: inline for a ``size`` below the threshold, else in a worker.
        What it raises is raised here; a worker that died raises ``Overloaded``."""
        if size < self.threshold:
            return function(*args)
        pool = await self._started()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
        except BrokenProcessPool as error:
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise Overloaded(f"the worker decoding large bodies stopped ({error}); try again") from None

    async def _started(self) -> ProcessPoolExecutor:
        async with self._starting:
            if self._pool is None:
                self._pool = await asyncio.to_thread(self._start)
            return self._pool

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["cutover.serving.protocol", "cutover.serving.grpc_protocol"])
        pool = ProcessPoolExecutor(self.workers, mp_context=context)
        pool.submit(int).result()  # one worker is up before the first body waits on it
        return pool

    def close(self) -> None:
        """Stop the workers (requests still in them fail)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
