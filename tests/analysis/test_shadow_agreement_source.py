"""The shadow agreement the operator reads (verdicts._agreement) against the real Prometheus:
exact counts of the gateway's comparisons since the rollout began, from raw samples (an
``increase()`` over the window would extrapolate them), and None before any comparison."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from cutover.analysis import PrometheusProvider
from cutover.api import contract
from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator.rollout import AnalysisPlan
from cutover.operator.verdicts import _agreement
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus

from ..cases import load

CANDIDATE = "c0ffee1234"


@pytest.fixture
def comparisons(tmp_path: Path) -> Iterator[tuple[Counter, Prometheus]]:
    registry = CollectorRegistry()
    series = contract.SHADOW_COMPARISONS
    counter = Counter(series.name, series.help, list(series.labels), registry=registry)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    prometheus = Prometheus(tmp_path, [{"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}])
    prometheus.start()
    yield counter, prometheus
    prometheus.stop()
    server.shutdown()


def test_agreement_is_the_exact_share_since_the_rollout_began(comparisons: tuple[Counter, Prometheus]) -> None:
    counter, prometheus = comparisons
    doc = copy.deepcopy(load("modeldeployment-shadow.yaml"))
    md = ModelDeployment.model_validate(doc)
    labels = {"namespace": md.metadata.namespace, "model": md.spec.model.name, "revision": CANDIDATE}
    counter.labels(**labels, agree="true").inc(500)  # before the rollout: must not count
    counter.labels(**labels, agree="false").inc(500)
    selector = f'{contract.SHADOW_COMPARISONS.sample}{{revision="{CANDIDATE}"}}'
    prometheus.wait_for(f"sum({selector}) == 1000")
    started = time.time()
    key = AnalysisPlan(CANDIDATE, "stable0000", datetime.fromtimestamp(started, UTC))

    async def read() -> float | None:
        async with httpx.AsyncClient() as client:
            return await _agreement(PrometheusProvider(client, prometheus.address, lookback=30), md, key, time.time())

    assert asyncio.run(read()) is None  # nothing compared since the rollout began
    counter.labels(**labels, agree="true").inc(97)
    counter.labels(**labels, agree="false").inc(3)
    prometheus.wait_for(f"sum({selector}) == 1100")
    assert asyncio.run(read()) == pytest.approx(0.97, abs=1e-12)
