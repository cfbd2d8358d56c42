"""hack/endpoints.py: what the gateway and Prometheus are given from EndpointSlices when serving
pods run on a real node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hack.endpoints import Addresses


def endpoint_slice(name: str, service: str, *endpoints: tuple[str, bool, bool]) -> dict[str, Any]:
    """A slice as the endpoint-slice controller writes it; each endpoint (address, ready, terminating)."""
    return {
        "metadata": {"namespace": "ns", "name": name, "labels": {"kubernetes.io/service-name": service}},
        "ports": [{"name": "grpc", "port": 8081}, {"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": ready, "serving": ready, "terminating": terminating}}
            for address, ready, terminating in endpoints
        ],
    }


def written(tmp_path: Path, *slices: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    addresses = Addresses(tmp_path)
    for item in slices:
        addresses.update(item)
    addresses.write()
    return json.loads(addresses.backends_file.read_text()), json.loads(addresses.targets_file.read_text())


def test_the_gateway_gets_a_ready_endpoint_and_never_a_terminating_or_unready_one(tmp_path: Path) -> None:
    backends, _ = written(
        tmp_path,
        endpoint_slice("v1-abc", "m-v1", ("10.244.7.5", False, True), ("10.244.7.6", True, False)),
        endpoint_slice("v2-abc", "m-v2", ("10.244.7.9", False, False)),
        endpoint_slice("v3-abc", "m-v3", ("10.244.7.10", True, True)),
    )
    assert backends == {"ns/m-v1": "http://10.244.7.6:8080"}


def test_prometheus_scrapes_every_serving_pod_once_ready_or_not(tmp_path: Path) -> None:
    _, targets = written(
        tmp_path,
        endpoint_slice("v1-abc", "m-v1", ("10.244.7.5", True, False), ("10.244.7.9", False, False)),
        endpoint_slice("stable-abc", "m-stable", ("10.244.7.5", True, False)),
    )
    assert targets == [{"targets": ["10.244.7.5:8080", "10.244.7.9:8080"], "labels": {"job": "cutover-serving"}}]


def test_a_deleted_slice_takes_its_service_out(tmp_path: Path) -> None:
    addresses = Addresses(tmp_path)
    addresses.update(endpoint_slice("v1-abc", "m-v1", ("10.244.7.5", True, False)))
    addresses.update(endpoint_slice("v1-abc", "m-v1"), deleted=True)
    addresses.write()
    assert json.loads(addresses.backends_file.read_text()) == {}
    assert json.loads(addresses.targets_file.read_text()) == []
