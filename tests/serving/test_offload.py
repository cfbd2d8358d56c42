"""serving/offload.py: small work inline, large work in a worker process that may die and is
replaced."""

from __future__ import annotations

import os

import pytest

from cutover.serving.errors import Overloaded
from cutover.serving.offload import Offload


async def test_large_work_runs_in_a_worker_process_and_a_dead_worker_is_replaced() -> None:
    offload = Offload(threshold=100)
    try:
        assert await offload.run(99, os.getpid) == os.getpid()  # below the threshold: inline
        worker = await offload.run(100, os.getpid)
        assert worker != os.getpid()
        with pytest.raises(Overloaded, match="the worker decoding large bodies stopped"):
            await offload.run(100, os._exit, 1)  # killed for memory, say
        assert await offload.run(100, os.getpid) not in (worker, os.getpid())
    finally:
        offload.close()
