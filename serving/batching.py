"""Dynamic batching: requests wait in one queue and run together, up to ``max_batch_size`` rows
or ``max_queue_delay`` after the oldest arrived, whichever comes first; each caller gets back
exactly its own rows.

Only requests with the same signature (input names, datatypes and every dimension but the
first) share a batch, so concatenation never pads or reshapes. A request larger than the batch
size runs alone. One batch runs at a time: while it computes, the next one fills up, so the
batch size grows with the load by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .statistics import RequestTimes

Signature = tuple[tuple[str, str, tuple[int, ...]], ...]
Run = Callable[[Mapping[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


class QueueFull(Exception):
    """The queue holds ``max_queue_size`` requests; the caller sheds this one (503)."""


class BatchMismatch(Exception):
    """The model returned outputs that cannot be split back by rows."""


def signature(inputs: Mapping[str, np.ndarray]) -> Signature:
    return tuple(sorted((name, array.dtype.str, array.shape[1:]) for name, array in inputs.items()))


@dataclass
class _Pending:
    inputs: Mapping[str, np.ndarray]
    rows: int
    signature: Signature
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float = field(default_factory=time.perf_counter)
    times: RequestTimes | None = None


@dataclass(frozen=True)
class BatchStats:
    size: int
    """Rows in the batch."""
    queue_seconds: tuple[float, ...]
    """How long each request in it waited."""


class Batcher:
    def __init__(
        self,
        run: Run,
        *,
        max_batch_size: int,
        max_queue_delay: float,
        max_queue_size: int,
        on_batch: Callable[[BatchStats], None] = lambda _: None,
        on_run: Callable[[int, int], None] = lambda rows, ns: None,
    ) -> None:
        """``on_batch`` hears of each batch as it starts; ``on_run`` of each model run when it
        ends: its rows and nanoseconds (Triton's execution statistics)."""
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.max_queue_size = max_queue_size
        self._on_batch = on_batch
        self._on_run = on_run
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.busy = False
        """Whether a batch is running in the model now."""

    @property
    def queued(self) -> int:
        """Requests waiting in the queue. Not ``__len__``: a batcher with an empty queue would
        then be false, and ``if model.batcher`` read "no batching" (perf_analyzer was told
        ``max_batch_size: 0`` whenever the queue was empty)."""
        return len(self._queue)

    async def submit(
        self, inputs: Mapping[str, np.ndarray], times: RequestTimes | None = None
    ) -> dict[str, np.ndarray]:
        """The model's outputs for ``inputs``, run in a batch; ``times`` (if given) gets the time
        the request waited for its batch (``queue``) and the time the model ran (``compute_infer``)."""
        if len(self._queue) >= self.max_queue_size:
            raise QueueFull(f"{len(self._queue)} requests are queued")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="batcher")
        counts = [array.shape[0] if array.ndim else -1 for array in inputs.values()]
        if len(set(counts)) > 1 or min(counts, default=0) < 0:
            raise ValueError(f"the inputs disagree on the batch dimension (rows {counts}); validate first")
        rows = counts[0] if counts else 0
        pending = _Pending(inputs, rows, signature(inputs), asyncio.get_running_loop().create_future(), times=times)
        self._queue.append(pending)
        self._arrived.set()
        return await pending.future

    async def close(self) -> None:
        """Stop after the queued requests have run."""
        while self._queue or self.busy:
            await asyncio.sleep(0.001)
        if self._worker is not None:
            self._worker.cancel()

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            batch = await self._collect()
            self.busy = True
            try:
                await self._execute(batch)
            finally:
                self.busy = False

    async def _collect(self) -> list[_Pending]:
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        deadline = first.enqueued + self.max_queue_delay
        while rows < self.max_batch_size:
            taken = self._take_matching(first.signature, self.max_batch_size - rows)
            if taken is not None:
                batch.append(taken)
                rows += taken.rows
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return batch

    def _take_matching(self, wanted: Signature, room: int) -> _Pending | None:
        for index, pending in enumerate(self._queue):
            if pending.signature == wanted and pending.rows <= room:
                del self._queue[index]
                return pending
        return None

    async def _execute(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        live = [p for p in batch if not p.future.done()]  # a caller that went away is skipped
        if not live:
            return
        waited = tuple(started - p.enqueued for p in live)
        self._on_batch(BatchStats(sum(p.rows for p in live), waited))
        for pending, seconds in zip(live, waited, strict=True):
            if pending.times is not None:
                pending.times.queue += int(seconds * 1e9)
        try:
            if len(live) == 1:
                _resolve(live[0], await self._timed(live[0].inputs, live))
                return
            names = list(live[0].inputs)
            merged = {name: np.concatenate([p.inputs[name] for p in live]) for name in names}
            outputs = await self._timed(merged, live)
            total = sum(p.rows for p in live)
            if any(array.ndim == 0 or array.shape[0] != total for array in outputs.values()):
                raise BatchMismatch(f"the model returned outputs whose first dimension is not the batch of {total}")
            offset = 0
            for pending in live:
                _resolve(pending, {name: array[offset : offset + pending.rows] for name, array in outputs.items()})
                offset += pending.rows
        except Exception as error:
            if len(live) == 1:
                if not live[0].future.done():
                    live[0].future.set_exception(error)
                return
            # One request's rows can make the whole batch fail (a model that raises on some
            # inputs); each runs alone again so only the offending one fails.
            for pending in live:
                try:
                    _resolve(pending, await self._timed(pending.inputs, [pending]))
                except Exception as alone:
                    if not pending.future.done():
                        pending.future.set_exception(alone)

    async def _timed(self, inputs: Mapping[str, np.ndarray], pendings: list[_Pending]) -> dict[str, np.ndarray]:
        """One model run for ``pendings``: reported to ``on_run`` and added to each one's times."""
        started = time.perf_counter_ns()
        try:
            return await self._run(inputs)
        finally:
            took = time.perf_counter_ns() - started
            self._on_run(sum(p.rows for p in pendings), took)
            for pending in pendings:
                if pending.times is not None:
                    pending.times.compute_infer += took


def _resolve(pending: _Pending, outputs: dict[str, np.ndarray]) -> None:
    if not pending.future.done():
        pending.future.set_result(outputs)
