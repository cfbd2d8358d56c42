"""The AlertRule evaluator against the real Prometheus server, scraping an exporter of the
contract's gateway series that the test drives: builtins, relative to stable, templates, and
every bad query the issue names (does not parse, several series, NaN, nothing, Prometheus down).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from cutover.analysis import PrometheusProvider
from cutover.api import contract
from cutover.api.v1alpha1 import AlertRule, ModelDeployment
from cutover.operator.alerts.evaluator import (
    Evaluation,
    evaluate,
    live_revisions,
    metric_query,
    ratio,
    worst,
)
from tests.cases import AR, CANARY, load
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus
from tests.support.waiting import wait_until

STABLE, CANDIDATE, IDLE = "5f7c9d1e", "a1b2c3d4", "0d0d0d0d"
NAMESPACE, MODEL = "payments", "fraud-scorer"


class Gateway:
    """The gateway's request counter and duration histogram, driven by hand."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            contract.GATEWAY_REQUESTS.name,
            contract.GATEWAY_REQUESTS.help,
            list(contract.GATEWAY_REQUESTS.labels),
            registry=self.registry,
        )
        self.duration = Histogram(
            contract.GATEWAY_REQUEST_DURATION.name,
            contract.GATEWAY_REQUEST_DURATION.help,
            list(contract.GATEWAY_REQUEST_DURATION.labels),
            buckets=contract.LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def serve(self, revision: str, role: str, ok: int, errors: int, seconds: float) -> None:
        self.requests.labels(NAMESPACE, MODEL, revision, role, "200").inc(ok)
        self.requests.labels(NAMESPACE, MODEL, revision, role, "503").inc(errors)
        for _ in range(ok + errors):
            self.duration.labels(NAMESPACE, MODEL, revision, role).observe(seconds)

    def idle(self, revision: str, role: str) -> None:
        """A revision whose counter exists but gets no requests."""
        self.requests.labels(NAMESPACE, MODEL, revision, role, "200")

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    g = Gateway()
    yield g
    g.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, gateway: Gateway) -> Iterator[Prometheus]:
    server = Prometheus(
        tmp_path_factory.mktemp("prometheus"),
        [{"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{gateway.port}"]}]}],
    )
    server.start()
    # Traffic until Prometheus holds several scrapes of it: stable 1% errors at 20 ms, the
    # candidate 10% errors at 300 ms, a third revision with a counter and no requests.
    gateway.idle(IDLE, "baseline")
    start = time.monotonic()

    def enough() -> bool:
        gateway.serve(STABLE, "stable", 99, 1, 0.02)
        gateway.serve(CANDIDATE, "candidate", 90, 10, 0.3)
        scraped = server.query(
            f'count_over_time({contract.GATEWAY_REQUESTS.sample}{{revision="{STABLE}",code="200"}}[1m])'
        )
        return bool(scraped) and float(scraped[0]["value"][1]) >= 5 and time.monotonic() - start > 4

    wait_until(enough, 60, "five scrapes of the gateway's traffic", 0.5)
    yield server
    server.stop()


@pytest.fixture
async def provider(prometheus: Prometheus) -> AsyncIterator[PrometheusProvider]:
    async with httpx.AsyncClient() as client:
        yield PrometheusProvider(client, prometheus.address, retries=0)


def md(traffic: list[tuple[str, str]] | None = None) -> ModelDeployment:
    doc: dict[str, Any] = copy.deepcopy(load(CANARY))
    rows = traffic if traffic is not None else [(STABLE, "stable"), (CANDIDATE, "candidate"), (IDLE, "baseline")]
    doc["status"] = {
        "stableRevision": STABLE,
        "traffic": [{"revision": r, "role": role, "weight": 0} for r, role in rows],
    }
    return ModelDeployment.model_validate(doc)


def rule(metric: dict[str, Any], relative_to: str = "absolute", threshold: float = 0.05) -> AlertRule:
    doc: dict[str, Any] = copy.deepcopy(load(AR))
    doc["spec"]["metric"] = {"window": "30s", **metric}
    doc["spec"]["condition"] = {"operator": ">", "threshold": threshold, "relativeTo": relative_to}
    return AlertRule.model_validate(doc)


async def run(provider: PrometheusProvider, alert: AlertRule, target: ModelDeployment | None = None) -> Evaluation:
    return await evaluate(provider, alert, target or md(), time.time())


def values(evaluation: Evaluation) -> dict[str, float | None]:
    return {o.revision: o.value for o in evaluation.observations}


async def test_error_rate_per_revision(provider: PrometheusProvider) -> None:
    found = await run(provider, rule({"builtin": "errorRate"}))
    got = values(found)
    assert got[STABLE] == pytest.approx(0.01)
    assert got[CANDIDATE] == pytest.approx(0.10)
    assert got[IDLE] is None, "no requests: no error rate, not zero"
    idle = next(o for o in found.observations if o.revision == IDLE)
    assert "NaN" in idle.message
    assert [p.reason for p in found.problems] == ["NoData"]
    assert {o.role for o in found.observations} == {"stable", "candidate", "baseline"}
    assert {o.target for o in found.observations} == {f"{NAMESPACE}/fraud-scorer"}


async def test_relative_to_stable_divides_by_stable_and_leaves_it_out(provider: PrometheusProvider) -> None:
    found = await run(provider, rule({"builtin": "errorRate"}, "stable", 1.5))
    got = values(found)
    assert STABLE not in got
    assert got[CANDIDATE] == pytest.approx(10.0)
    candidate = next(o for o in found.observations if o.revision == CANDIDATE)
    assert "against stable 0.01" in candidate.message


async def test_relative_without_stable_data_is_missing_data(provider: PrometheusProvider) -> None:
    target = md([(IDLE, "stable"), (CANDIDATE, "candidate")])
    found = await run(provider, rule({"builtin": "errorRate"}, "stable", 1.5), target)
    assert values(found) == {CANDIDATE: None}
    assert f"no value for the stable revision {IDLE}" in found.observations[0].message


async def test_latency_quantiles_in_seconds(provider: PrometheusProvider) -> None:
    p99 = values(await run(provider, rule({"builtin": "latencyP99"})))
    # histogram_quantile interpolates inside the bucket that holds the quantile.
    assert 0.01 < (p99[STABLE] or 0) <= 0.025
    assert 0.25 < (p99[CANDIDATE] or 0) <= 0.5
    p50 = values(await run(provider, rule({"builtin": "latencyP50"})))
    assert (p50[STABLE] or 0) <= (p99[STABLE] or 0)


async def test_request_rate(provider: PrometheusProvider) -> None:
    got = values(await run(provider, rule({"builtin": "requestRate"})))
    assert (got[STABLE] or 0) > 0
    assert got[IDLE] == 0, "a counter that stands still has a rate of zero"


async def test_template_fills_its_variables(provider: PrometheusProvider) -> None:
    query = (
        'sum(rate(cutover_gateway_requests_total{namespace="{{namespace}}",model="{{model}}",'
        'revision="{{revision}}",code="503"}[{{window}}]))'
    )
    got = values(await run(provider, rule({"query": query})))
    assert (got[CANDIDATE] or 0) > (got[STABLE] or 0) > 0


@pytest.mark.parametrize(
    ("query", "reason", "says"),
    [
        ("sum(rate(cutover_gateway_requests_total[{{window}}]", "QueryInvalid", "parse error"),
        ("sum(rate(x[{{window}}])) / {{replicas}}", "QueryInvalid", "unknown template variable {{replicas}}"),
        (
            'sum by (code) (rate(cutover_gateway_requests_total{revision="{{revision}}"}[{{window}}]))',
            "QueryReturnedSeveralSeries",
            "returned 2 series",
        ),
        ('cutover_no_such_series{revision="{{revision}}"}', "NoData", "returned nothing"),
        ("vector(0) / 0", "NoData", "returned NaN"),
        ("scalar(vector(1))", "QueryInvalid", "must return an instant vector"),
    ],
)
async def test_bad_queries_are_named_and_freeze(
    provider: PrometheusProvider, query: str, reason: str, says: str
) -> None:
    target = md([(STABLE, "stable"), (CANDIDATE, "candidate")])
    found = await run(provider, rule({"query": query}), target)
    assert values(found) == {STABLE: None, CANDIDATE: None}, "no value, so the instances freeze"
    assert all(says in o.message for o in found.observations)
    problem = worst(found.problems)
    assert problem is not None
    assert problem.reason == reason
    assert says in problem.message
    assert f"{NAMESPACE}/fraud-scorer" in problem.message


async def test_a_builtin_nothing_exports_says_why(
    provider: PrometheusProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The safety series as the contract declared them before serving ran the filters.
    unexported = {contract.SAFETY_VIOLATIONS, contract.SAFETY_CHECKS}
    series = tuple(
        replace(s, exported_by=(), not_exported="not yet") if s in unexported else s for s in contract.SERIES
    )
    monkeypatch.setattr(contract, "SERIES", series)
    found = await run(provider, rule({"builtin": "safetyViolationRate"}))
    assert set(values(found).values()) == {None}
    assert "exported by no component" in found.observations[0].message


async def test_prometheus_down_is_metrics_unavailable() -> None:
    async with httpx.AsyncClient() as client:
        down = PrometheusProvider(client, f"http://127.0.0.1:{free_port()}", retries=0, timeout=2)
        found = await evaluate(down, rule({"builtin": "errorRate"}), md(), time.time())
    assert set(values(found).values()) == {None}
    assert [p.reason for p in found.problems] == ["MetricsUnavailable"]


async def test_evaluations_of_two_rules_run_side_by_side(provider: PrometheusProvider) -> None:
    broken = rule({"query": "sum(rate(("})
    fine = rule({"builtin": "errorRate"})
    bad, good = await asyncio.gather(run(provider, broken), run(provider, fine))
    assert set(values(bad).values()) == {None}
    assert values(good)[CANDIDATE] == pytest.approx(0.10)


# ---- pure parts ---------------------------------------------------------------------------------


def test_builtin_queries_follow_the_traffic_provider() -> None:
    gateway = metric_query(rule({"builtin": "errorRate"}).spec.metric, md(), "abc")
    assert contract.GATEWAY_REQUESTS.sample in gateway
    assert 'code=~"5.."' in gateway
    doc = copy.deepcopy(load(CANARY))
    doc["spec"]["traffic"] = {"provider": "replicas"}
    query = metric_query(rule({"builtin": "latencyP99"}).spec.metric, ModelDeployment.model_validate(doc), "abc")
    assert query.startswith("histogram_quantile(0.99, ")
    assert contract.SERVING_REQUEST_DURATION.name in query
    assert 'revision="abc"' in query
    assert "[30s]" in query


def test_live_revisions_stable_first_and_once() -> None:
    target = md([(CANDIDATE, "candidate"), (STABLE, "stable"), (CANDIDATE, "candidate")])
    assert live_revisions(target) == [(STABLE, "stable"), (CANDIDATE, "candidate")]
    doc = copy.deepcopy(load(CANARY))
    doc["status"] = {"stableRevision": STABLE, "candidateRevision": CANDIDATE}
    assert live_revisions(ModelDeployment.model_validate(doc)) == [(STABLE, "stable"), (CANDIDATE, "candidate")]
    assert live_revisions(ModelDeployment.model_validate(load(CANARY))) == []


def test_ratio_edges() -> None:
    assert ratio(0.02, 0.01) == pytest.approx(2.0)
    assert ratio(0.0, 0.0) == 1.0
    assert ratio(0.01, 0.0) == float("inf")
