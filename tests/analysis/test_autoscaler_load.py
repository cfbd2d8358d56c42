"""What the autoscaler reads (operator/load.py) against the real Prometheus: in-flight requests
summed over the pods of the live revisions only, DCGM's GPU utilisation averaged per pod (a
stand-in exporter with the DCGM exporter's series and labels), a metric without a series as
None, and Prometheus down as every metric None with the reason."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from cutover.analysis import PrometheusProvider
from cutover.api import contract
from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator import load as autoscaler_load
from cutover.operator.rollout.autoscaling import Load, Reading
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus

from ..cases import GPU, load

STABLE, CANDIDATE, OLD = "5ab1e00000", "c0ffee1234", "01d0000000"


@pytest.fixture
def exporters(tmp_path: Path) -> Iterator[tuple[list[CollectorRegistry], Prometheus]]:
    """Three scrape targets: two serving pods and a DCGM exporter stand-in."""
    registries = [CollectorRegistry() for _ in range(3)]
    servers, targets = [], []
    for registry in registries:
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=registry)[0])
        targets.append(f"127.0.0.1:{port}")
    prometheus = Prometheus(tmp_path, [{"job_name": "pods", "static_configs": [{"targets": targets}]}])
    prometheus.start()
    yield registries, prometheus
    prometheus.stop()
    for server in servers:
        server.shutdown()


def gpu_md(autoscaling: dict[str, object]) -> ModelDeployment:
    doc = copy.deepcopy(load(GPU))
    doc["spec"]["runtime"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 8, **autoscaling}
    return ModelDeployment.model_validate(doc)


def read(prometheus: Prometheus | str, md: ModelDeployment) -> Load:
    address = prometheus if isinstance(prometheus, str) else prometheus.address

    async def go() -> Load:
        async with httpx.AsyncClient() as client:
            provider = PrometheusProvider(client, address, retries=0)
            return await autoscaler_load.read(provider, md, [STABLE, CANDIDATE], 3, time.time())

    return asyncio.run(go())


def test_in_flight_and_gpu_utilisation_of_the_live_revisions(
    exporters: tuple[list[CollectorRegistry], Prometheus],
) -> None:
    registries, prometheus = exporters
    md = gpu_md({"targetInFlight": 4, "targetGpuUtilization": 70})
    namespace, model, name = md.metadata.namespace, md.spec.model.name, md.metadata.name
    series = contract.SERVING_IN_FLIGHT
    for registry, in_flight in zip(registries[:2], ({STABLE: 3, OLD: 100}, {STABLE: 5, CANDIDATE: 2}), strict=True):
        gauge = Gauge(series.name, series.help, series.labels, registry=registry)
        for revision, value in in_flight.items():
            gauge.labels(namespace, model, revision).set(value)
    dcgm = Gauge(
        contract.GPU_UTILIZATION, "GPU utilization (in %).", ["gpu", "namespace", "pod"], registry=registries[2]
    )
    dcgm.labels("0", namespace, f"{name}-{STABLE}-6f7d9-abcde").set(80)
    dcgm.labels("1", namespace, f"{name}-{STABLE}-6f7d9-abcde").set(60)  # two GPUs: 70 for the pod
    dcgm.labels("0", namespace, f"{name}-{CANDIDATE}-5c4b3-fghij").set(50)
    dcgm.labels("1", namespace, f"{name}-{OLD}-1a2b3-klmno").set(100)  # not live
    dcgm.labels("2", "elsewhere", f"{name}-{STABLE}-6f7d9-abcde").set(100)  # another namespace
    prometheus.wait_for(f"count({series.name}) == 4 and count({contract.GPU_UTILIZATION}) == 5")
    found = read(prometheus, md)
    assert found == Load(
        {"inFlight": Reading("inFlight", 10.0, 3), "gpuUtilization": Reading("gpuUtilization", 120.0, 2)}, 3
    )


def test_a_metric_without_a_series_is_none(exporters: tuple[list[CollectorRegistry], Prometheus]) -> None:
    _, prometheus = exporters
    assert read(prometheus, gpu_md({"targetGpuUtilization": 70})) == Load({"gpuUtilization": None}, 3)


def test_prometheus_down_is_every_metric_none_with_why() -> None:
    found = read(f"http://127.0.0.1:{free_port()}", gpu_md({"targetInFlight": 4, "targetGpuUtilization": 70}))
    assert found.readings == {"inFlight": None, "gpuUtilization": None}
    assert "unreachable" in found.error
