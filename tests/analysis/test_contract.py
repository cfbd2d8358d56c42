"""The contract module (cutover.api.contract) against the components: every series the analysis
engine reads is registered by the serving runtime or the gateway, under the name, type and
labels the contract gives, and a series no component registers is never read (issue 12, item 9).
Also the shared bucket edges and the writing of unbounded confidence bounds."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cutover.analysis import Analysis, Arms
from cutover.analysis.engine import LOW_CONFIDENCE
from cutover.analysis.provider import Labels
from cutover.api.contract import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS,
    LATENCY_THRESHOLDS,
    SERIES,
    Component,
    duration_text,
    interval_text,
)
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec, MetricSpec
from cutover.serving.gateway.app import GatewayMetrics
from cutover.serving.gateway.routing import Backend, Route
from cutover.serving.metrics import ServingMetrics

BUILTINS = (
    "errorRate",
    "latency",
    "predictionConfidence",
    "outOfDistributionRate",
    "safetyViolations",
    "accuracy",
    "calibrationError",
    "inputDrift",
)
EXTRA = {
    "latency": {"latencyThreshold": "100ms"},
    "calibrationError": {"thresholdRange": {"max": 0.05}},
    "inputDrift": {"thresholdRange": {"max": 0.2}},
}
ARMS = Arms("c0ffee00", "ba5e1111")


def registries() -> dict[Component, CollectorRegistry]:
    return {
        "serving": ServingMetrics("shop", "ranker", "c0ffee00", lambda: 0.0).registry,
        "gateway": GatewayMetrics().registry,
    }


def families(registry: CollectorRegistry) -> Iterator[tuple[str, str, str]]:
    """(family name, type, sample name a query selects) of every registered family."""
    for family in registry.collect():
        suffix = {"counter": "_total", "histogram": "_bucket"}.get(family.type, "")
        yield family.name, family.type, family.name + suffix


@dataclass
class Everything:
    """A provider with a plausible answer for any selector: both arms, every bucket edge."""

    selectors: list[str] = field(default_factory=list)

    async def increments(self, selector: str, by: Sequence[str], start: float, end: float) -> dict[Labels, float]:
        self.selectors.append(selector)
        edges = [*sorted({*LATENCY_BUCKETS, *CONFIDENCE_BUCKETS}), math.inf]
        out = {}
        for revision in (ARMS.candidate, ARMS.baseline):
            for i, le in enumerate(edges if "le" in by else [None]):
                labels = {"revision": revision, "code": "200", "le": "+Inf" if le == math.inf else str(le)}
                labels |= {"outcome": "correct", "bucket": "1", "feature": "age", "bin": "0"}
                out[tuple((name, labels[name]) for name in by)] = float(i + 1)
        return out

    async def instant(self, query: str, at: float) -> dict[Labels, float]:
        self.selectors.append(query)
        labels = {"feature": "age", "bin": "0"}
        return {(("revision", r), *labels.items()): 1.0 for r in (ARMS.candidate, ARMS.baseline)}


@pytest.mark.parametrize("source", ["gateway", "serving"])
def test_every_series_the_engine_reads_is_registered_by_some_component(source: str) -> None:
    exported = {sample for registry in registries().values() for _, _, sample in families(registry)}
    provider = Everything()
    for builtin in BUILTINS:
        metric = {"name": "m", "builtin": builtin} | EXTRA.get(builtin, {})
        spec = AnalysisSpec.model_validate({"metrics": [metric]})
        analysis = Analysis(spec, namespace="shop", model="ranker", arms=ARMS, started_at=0.0, request_source=source)  # type: ignore[arg-type]
        asyncio.run(analysis.tick(provider, 30.0))
    read = {selector.split("{", 1)[0] for selector in provider.selectors}
    assert read, "the engine read nothing"
    assert read <= exported, f"read but exported by no component: {sorted(read - exported)}"


def test_the_contract_says_truly_who_registers_each_series() -> None:
    registered = {component: set(families(registry)) for component, registry in registries().items()}
    for series in SERIES:
        for component, present in registered.items():
            entry = (series.name, series.kind, series.sample)
            assert (entry in present) == (component in series.exported_by), (series.name, component)
        if not series.exported_by:
            assert series.not_exported, f"{series.name}: say why nothing exports it"


def test_the_contract_labels_are_the_registered_labels() -> None:
    serving = ServingMetrics("shop", "ranker", "c0ffee00", lambda: 0.0)
    serving.request(200, 0.01)
    gateway = GatewayMetrics()
    backend = Backend(revision="c0ffee00", role="candidate", url="http://127.0.0.1:1", weight=100)
    route = Route(namespace="shop", deployment="ranker", model="ranker", backends=(backend,))
    gateway.request(route, backend, 200, 0.01)
    labels = {}
    for registry in (serving.registry, gateway.registry):
        for family in registry.collect():
            for sample in family.samples:
                labels.setdefault(family.name, set(sample.labels) - {"le"})
    for series in SERIES:
        if series.name in labels:
            assert labels[series.name] == set(series.labels), series.name


def test_the_low_confidence_threshold_is_a_confidence_bucket_edge() -> None:
    assert LOW_CONFIDENCE in CONFIDENCE_BUCKETS


# -- item 12: latencyThreshold is one of the shared bucket edges ---------------------------------


def test_latency_thresholds_are_the_writable_latency_bucket_edges() -> None:
    assert [duration_text(edge) for edge in LATENCY_BUCKETS if duration_text(edge)] == list(LATENCY_THRESHOLDS)
    assert "100ms" in LATENCY_THRESHOLDS and "1s" in LATENCY_THRESHOLDS and "2500ms" in LATENCY_THRESHOLDS
    assert duration_text(0.0005) is None  # an edge the duration syntax cannot write


@pytest.mark.parametrize("threshold", [*LATENCY_THRESHOLDS, "1000ms", "2s500ms", "0m250ms"])
def test_every_bucket_edge_is_accepted_as_a_latency_threshold(threshold: str) -> None:
    MetricSpec.model_validate({"name": "latency", "builtin": "latency", "latencyThreshold": threshold})


@pytest.mark.parametrize("threshold", ["300ms", "2s", "1m", "1ms1ms", "0s"])
def test_a_latency_threshold_between_edges_is_refused_with_the_edges(threshold: str) -> None:
    with pytest.raises(ValueError, match="latencyThreshold must be a bucket edge of the latency histograms: 1ms, 5ms"):
        MetricSpec.model_validate({"name": "latency", "builtin": "latency", "latencyThreshold": threshold})


# -- item 13: an unbounded side is written as such ----------------------------------------------


@pytest.mark.parametrize(
    ("lower", "upper", "text"),
    [
        (0.0, None, "[0, ∞)"),
        (0.0, math.inf, "[0, ∞)"),
        (None, None, "(-∞, ∞)"),
        (-math.inf, 1.25, "(-∞, 1.25]"),
        (0.8123, 1.3456, "[0.812, 1.35]"),
    ],
)
def test_interval_text_writes_unbounded_sides_as_such(lower: float | None, upper: float | None, text: str) -> None:
    assert interval_text(lower, upper) == text


def test_the_docs_list_the_latency_thresholds_the_api_accepts() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "analysis.md").read_text()
    assert "(" + ", ".join(LATENCY_THRESHOLDS) + ")" in " ".join(docs.split())


def test_serving_exports_the_out_of_distribution_counter_only_for_a_model_it_scores() -> None:
    """A model without training statistics is never scored: a counter stuck at 0 would let an
    outOfDistributionRate gate pass on no evidence, so the series is absent (unavailable)."""
    child = b'cutover_out_of_distribution_total{model="ranker",namespace="shop",revision="c0ffee00"}'
    unscored = ServingMetrics("shop", "ranker", "c0ffee00", lambda: 0.0, scores_out_of_distribution=False)
    assert child not in generate_latest(unscored.registry)
    scored = ServingMetrics("shop", "ranker", "c0ffee00", lambda: 0.0, scores_out_of_distribution=True)
    assert child + b" 0.0" in generate_latest(scored.registry)  # present before the first event
    scored.out_of_distribution(3)
    assert child + b" 3.0" in generate_latest(scored.registry)
