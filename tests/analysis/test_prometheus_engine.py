"""The analysis engine against the real Prometheus server, scraping a small exporter whose
counters the test drives: a good candidate is promoted, a bad one rolled back, and stopping
Prometheus mid-run gives `unavailable` until it is back, with no request lost from the evidence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from cutover.analysis import Analysis, Arms, PostPromotionWatch, PrometheusProvider, Result, WatchResult
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec
from tests.analysis import ticking
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus

STABLE, CANDIDATE = "5f7c9d1e", "a1b2c3d4"


class Exporter:
    """What the gateway will export, driven by hand."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cutover_gateway_requests",
            "Requests answered",
            ["namespace", "model", "revision", "code"],
            registry=self.registry,
        )
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self.sent = {STABLE: 0, CANDIDATE: 0}

    def serve(self, revision: str, requests: int, errors: int) -> None:
        self.requests.labels("shop", "ranker", revision, "200").inc(requests - errors)
        self.requests.labels("shop", "ranker", revision, "503").inc(errors)
        self.sent[revision] += requests

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    e = Exporter()
    yield e
    e.close()


@pytest.fixture
def prometheus(tmp_path: Path, exporter: Exporter) -> Iterator[Prometheus]:
    server = Prometheus(
        tmp_path, [{"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}]
    )
    server.start()
    yield server
    server.stop()


def spec(**overrides: object) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {
            "interval": "2s",
            "minDuration": "4s",
            "minSamples": 2000,
            "alpha": 0.01,
            "metrics": [{"name": "error-rate", "builtin": "errorRate", "critical": True, "passMargin": 0.5}],
            **overrides,
        }
    )


def scraped(prometheus: Prometheus, exporter: Exporter) -> None:
    """Wait until Prometheus has scraped what was sent so far."""
    for revision, sent in exporter.sent.items():
        if sent:
            prometheus.wait_for(f'sum(cutover_gateway_requests_total{{revision="{revision}"}}) == {sent}')


async def run(
    prometheus: Prometheus, exporter: Exporter, candidate_error_rate: float, ticks: int, until: str
) -> tuple[Analysis, list[Result]]:
    for revision in (STABLE, CANDIDATE):
        exporter.serve(revision, 1000, 20)  # history from before the rollout: must not count
    scraped(prometheus, exporter)
    before = dict(exporter.sent)
    analysis = Analysis(spec(), namespace="shop", model="ranker", arms=Arms(CANDIDATE, STABLE), started_at=time.time())

    def feed(_: int) -> None:
        exporter.serve(STABLE, 5000, 100)
        exporter.serve(CANDIDATE, 5000, int(5000 * candidate_error_rate))
        scraped(prometheus, exporter)

    results = await ticking.ticks(analysis, prometheus, range(ticks), feed, until)
    evidence = results[-1].evidence[0]
    assert evidence.candidate_samples == exporter.sent[CANDIDATE] - before[CANDIDATE]
    assert evidence.baseline_samples == exporter.sent[STABLE] - before[STABLE]
    return analysis, results


def test_good_candidate_is_promoted(prometheus: Prometheus, exporter: Exporter) -> None:
    _, results = asyncio.run(run(prometheus, exporter, 0.02, ticks=10, until="promote"))
    assert results[-1].verdict == "promote", [r.reason for r in results]
    assert "rollback" not in [r.verdict for r in results]
    assert results[0].verdict in ("inconclusive", "continue")


def test_bad_candidate_is_rolled_back_with_numbers(prometheus: Prometheus, exporter: Exporter) -> None:
    _, results = asyncio.run(run(prometheus, exporter, 0.06, ticks=5, until="rollback"))
    last = results[-1]
    assert last.verdict == "rollback"
    assert "critical metric error-rate failed" in last.reason
    evidence = last.evidence[0]
    assert evidence.lower is not None and evidence.lower > 1.0
    assert evidence.estimate is not None and 2.0 < evidence.estimate < 4.5
    status = last.status()
    assert status.verdict == "rollback" and status.metrics[0].decision == "fail"


def test_prometheus_outage_gives_unavailable_then_resumes(prometheus: Prometheus, exporter: Exporter) -> None:
    async def scenario() -> None:
        for revision in (STABLE, CANDIDATE):
            exporter.serve(revision, 1000, 20)
        scraped(prometheus, exporter)
        before = dict(exporter.sent)
        analysis = Analysis(
            spec(), namespace="shop", model="ranker", arms=Arms(CANDIDATE, STABLE), started_at=time.time()
        )
        async with httpx.AsyncClient() as client:
            provider = PrometheusProvider(client, prometheus.address, lookback=30, retries=1, backoff=0.1)
            exporter.serve(STABLE, 1000, 20)
            exporter.serve(CANDIDATE, 1000, 20)
            scraped(prometheus, exporter)
            first = await analysis.tick(provider, time.time())
            assert first.verdict in ("inconclusive", "continue")

            prometheus.stop()
            exporter.serve(STABLE, 3000, 60)  # traffic goes on while Prometheus is down
            exporter.serve(CANDIDATE, 3000, 60)
            down = [await analysis.tick(provider, time.time()) for _ in range(2)]
            assert [r.verdict for r in down] == ["unavailable", "unavailable"]
            assert [r.consecutive_errors for r in down] == [1, 2]
            assert "unreachable" in down[0].reason

            prometheus.start()
            scraped(prometheus, exporter)
            back = await analysis.tick(provider, time.time())
            assert back.verdict != "unavailable" and back.consecutive_errors == 0
            evidence = back.evidence[0]
            # Every request served during the outage is in the evidence: nothing lost, nothing twice.
            assert evidence.candidate_samples == exporter.sent[CANDIDATE] - before[CANDIDATE]
            assert evidence.baseline_samples == exporter.sent[STABLE] - before[STABLE]

    asyncio.run(scenario())


def test_no_series_for_a_revision_is_unavailable(prometheus: Prometheus, exporter: Exporter) -> None:
    async def scenario() -> Result:
        exporter.serve(STABLE, 1000, 10)
        scraped(prometheus, exporter)
        analysis = Analysis(
            spec(), namespace="shop", model="ranker", arms=Arms("0000dead", STABLE), started_at=time.time()
        )
        async with httpx.AsyncClient() as client:
            return await analysis.tick(PrometheusProvider(client, prometheus.address), time.time())

    result = asyncio.run(scenario())
    assert result.verdict == "unavailable"
    assert "no samples of cutover_gateway_requests_total for revision 0000dead" in result.reason


def test_post_promotion_watch_alarms_when_the_promoted_revision_regresses(
    prometheus: Prometheus, exporter: Exporter
) -> None:
    async def scenario() -> list[WatchResult]:
        analysis, results = await run(prometheus, exporter, 0.02, ticks=10, until="promote")
        assert results[-1].verdict == "promote"
        watch = PostPromotionWatch(analysis, started_at=time.time())
        seen = []
        async with httpx.AsyncClient() as client:
            provider = PrometheusProvider(client, prometheus.address, lookback=30)
            for error_rate in (0.02, 0.02, 0.05, 0.05):
                exporter.serve(CANDIDATE, 5000, int(5000 * error_rate))
                scraped(prometheus, exporter)
                await asyncio.sleep(2.0)
                seen.append(await watch.tick(provider, time.time()))
        return seen

    seen = asyncio.run(scenario())
    assert [r.alarm for r in seen[:2]] == [False, False]
    assert seen[-1].alarm and "has regressed since promotion" in seen[-1].reason
