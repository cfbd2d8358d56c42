"""The latencyThreshold CEL rule on the real API server: every bucket edge is admitted however it
is spelt, anything between edges is refused with the list of edges (issue 12, item 12; the refusal
of one such value is also a case in tests/cases.py)."""

from __future__ import annotations

import pytest

from cutover.api.contract import LATENCY_THRESHOLDS
from tests.support.kubectl import Kube

from ..cases import CANARY, load

pytestmark = pytest.mark.cluster


def with_thresholds(*thresholds: str) -> dict[str, object]:
    doc = load(CANARY)
    doc["metadata"].pop("namespace")
    metrics = [{"name": "error-rate", "builtin": "errorRate"}]
    metrics += [{"name": f"latency-{i}", "builtin": "latency", "latencyThreshold": t} for i, t in enumerate(thresholds)]
    doc["spec"]["analysis"]["metrics"] = metrics
    return doc


def test_every_bucket_edge_is_admitted(kube: Kube, namespace: str) -> None:
    done = kube.apply(with_thresholds(*LATENCY_THRESHOLDS), namespace=namespace, check=False, dry_run=True)
    assert done.returncode == 0, done.stderr
    done = kube.apply(with_thresholds("1000ms", "2s500ms", "0m250ms"), namespace=namespace, check=False, dry_run=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("threshold", ["300ms", "2s", "1m", "0s"])
def test_a_threshold_between_edges_is_refused_with_the_edges(kube: Kube, namespace: str, threshold: str) -> None:
    done = kube.apply(with_thresholds(threshold), namespace=namespace, check=False, dry_run=True)
    assert done.returncode != 0
    assert "latencyThreshold must be a bucket edge of the latency histograms: " + ", ".join(LATENCY_THRESHOLDS) in (
        done.stderr
    )
