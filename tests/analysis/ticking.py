"""The analysis against the real Prometheus server, one tick a round, as the operator runs it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import httpx

from cutover.analysis import Analysis, PrometheusProvider, Result
from tests.support.prometheus import Prometheus

T = TypeVar("T")

INTERVAL_SECONDS = 2.0
"""The tests' analysis interval ("2s"): a tick reads the growth since the last one."""


async def ticks(
    analysis: Analysis, prometheus: Prometheus, rounds: Iterable[T], feed: Callable[[T], None], until: str
) -> list[Result]:
    """One tick of ``analysis`` for each of ``rounds``, after ``feed(round)`` (which sends the
    round's traffic and waits until Prometheus has scraped it) and one analysis interval: the
    results, up to the first whose verdict is ``until``."""
    results: list[Result] = []
    async with httpx.AsyncClient() as client:
        provider = PrometheusProvider(client, prometheus.address, lookback=30)
        for round_ in rounds:
            feed(round_)
            await asyncio.sleep(INTERVAL_SECONDS)
            results.append(await analysis.tick(provider, time.time()))
            if results[-1].verdict == until:
                break
    return results
