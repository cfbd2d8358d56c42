"""Dynamic batching: size and delay limits, per-request splitting, shape separation, shedding,
and one bad request not failing its neighbours."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
import pytest

from cutover.serving.batching import Batcher, BatchStats, QueueFull


class Model:
    """Doubles its input and records every batch it was called with."""

    def __init__(self, fail_over: float | None = None) -> None:
        self.calls: list[int] = []
        self.fail_over = fail_over
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        await self.gate.wait()
        x = inputs["x"]
        self.calls.append(x.shape[0])
        if self.fail_over is not None and (x > self.fail_over).any():
            raise RuntimeError("value over the limit")
        return {"y": x * 2}


def rows(start: int, count: int, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + count * width, dtype=np.float32).reshape(count, width)}


async def test_concurrent_requests_share_a_batch_and_get_their_own_rows_back() -> None:
    model = Model()
    stats: list[BatchStats] = []
    batcher = Batcher(model, max_batch_size=16, max_queue_delay=0.05, max_queue_size=64, on_batch=stats.append)
    requests = [rows(i * 100, 1 + i % 3) for i in range(8)]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    assert sum(model.calls) == sum(r["x"].shape[0] for r in requests)
    assert max(model.calls) > 3, "concurrent requests were not batched"
    assert all(s.size <= 16 for s in stats)
    await batcher.close()


async def test_batch_never_exceeds_max_batch_size() -> None:
    model = Model()
    batcher = Batcher(model, max_batch_size=4, max_queue_delay=0.05, max_queue_size=64)
    await asyncio.gather(*(batcher.submit(rows(i, 1)) for i in range(10)))
    assert max(model.calls) <= 4 and sum(model.calls) == 10
    await batcher.close()


async def test_a_lone_request_waits_at_most_the_queue_delay() -> None:
    model = Model()
    stats: list[BatchStats] = []
    batcher = Batcher(model, max_batch_size=64, max_queue_delay=0.01, max_queue_size=64, on_batch=stats.append)
    await asyncio.wait_for(batcher.submit(rows(0, 1)), timeout=5)
    assert model.calls == [1]
    assert stats[0].queue_seconds[0] >= 0.01
    await batcher.close()


async def test_requests_of_different_shapes_are_never_mixed() -> None:
    model = Model()
    batcher = Batcher(model, max_batch_size=32, max_queue_delay=0.05, max_queue_size=64)
    narrow = [rows(i, 1, width=2) for i in range(4)]
    wide = [rows(i, 1, width=3) for i in range(4)]
    results = await asyncio.gather(*(batcher.submit(r) for r in narrow + wide))
    for request, result in zip(narrow + wide, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    assert sorted(model.calls) == [4, 4]
    await batcher.close()


async def test_full_queue_sheds_instead_of_growing() -> None:
    model = Model()
    model.gate.clear()
    batcher = Batcher(model, max_batch_size=1, max_queue_delay=0, max_queue_size=3)
    running = asyncio.create_task(batcher.submit(rows(0, 1)))
    while not batcher.busy:
        await asyncio.sleep(0)
    waiting = [running, *(asyncio.create_task(batcher.submit(rows(i, 1))) for i in range(1, 4))]
    while batcher.queued < 3:
        await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await batcher.submit(rows(9, 1))
    model.gate.set()
    await asyncio.gather(*waiting)
    await batcher.close()


async def test_one_failing_request_does_not_fail_its_batch_neighbours() -> None:
    model = Model(fail_over=1000)
    batcher = Batcher(model, max_batch_size=16, max_queue_delay=0.05, max_queue_size=64)
    good = [rows(i * 10, 1) for i in range(5)]
    bad = rows(5000, 1)
    results = await asyncio.gather(*(batcher.submit(r) for r in [*good, bad]), return_exceptions=True)
    assert isinstance(results[-1], RuntimeError)
    for request, result in zip(good, results[:-1], strict=True):
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    await batcher.close()


async def test_a_request_whose_inputs_disagree_on_rows_is_never_queued() -> None:
    model = Model()
    batcher = Batcher(model, max_batch_size=32, max_queue_delay=0.05, max_queue_size=64)
    with pytest.raises(ValueError, match="batch dimension"):
        await batcher.submit({"x": np.zeros((2, 2), np.float32), "w": np.zeros((1, 2), np.float32)})
    assert model.calls == []
    await batcher.close()
