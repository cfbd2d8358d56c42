"""The post-promotion watch as the operator runs it (PrometheusVerdicts.watch) against the real
Prometheus: it starts from the rollout's own evidence, alarms when the promoted revision's error
rate rises, and after an operator restart rebuilds the same finding from Prometheus' history."""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator.verdicts import PrometheusVerdicts
from tests.support.prometheus import Prometheus

from ..cases import load
from .test_prometheus_engine import CANDIDATE, STABLE, Exporter, exporter, prometheus, scraped  # noqa: F401

INTERVAL = 2.0


def _md(address: str, status: dict[str, Any]) -> ModelDeployment:
    doc = copy.deepcopy(load("modeldeployment-canary.yaml"))
    doc["metadata"].update({"name": "ranker", "namespace": "shop", "uid": "u-1"})
    doc["spec"]["model"]["name"] = "ranker"
    doc["spec"]["analysis"] = {
        "interval": "2s",
        "minDuration": "2s",
        "minSamples": 100,
        "metrics": [{"name": "error-rate", "builtin": "errorRate", "critical": True}],
        "prometheus": {"address": address},
        "postPromotion": {"duration": "10m", "shift": 2.0},
    }
    doc["status"] = status
    return ModelDeployment.model_validate(doc)


def _at(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


async def _interval_ends(since: float) -> float:
    """Wait for the clock to pass the end of the interval that began at ``since``."""
    await asyncio.sleep(max(0.0, since + INTERVAL + 0.05 - time.time()))
    return time.time()


def test_the_watch_rolls_on_from_the_rollout_and_survives_a_restart(
    prometheus: Prometheus,  # noqa: F811
    exporter: Exporter,  # noqa: F811
) -> None:
    async def scenario() -> None:
        address = prometheus.address
        for revision in (STABLE, CANDIDATE):
            exporter.serve(revision, 1000, 20)
        scraped(prometheus, exporter)
        started = time.time()
        rolling = _md(
            address, {"stableRevision": STABLE, "candidateRevision": CANDIDATE, "rolloutStartedAt": _at(started)}
        )
        async with httpx.AsyncClient() as http:
            verdicts = PrometheusVerdicts(http)
            tick = started
            for _ in range(3):  # the rollout: both arms at 2% errors
                exporter.serve(STABLE, 4000, 80)
                exporter.serve(CANDIDATE, 4000, 80)
                scraped(prometheus, exporter)
                tick = await _interval_ends(tick)
                result = await verdicts.current(rolling, tick)
                assert result is not None and result.verdict != "rollback", result.reason
            promoted_at = tick
            watched = {
                "revision": CANDIDATE,
                "previous": STABLE,
                "baseline": STABLE,
                "rolloutStartedAt": _at(started),
                "promotedAt": _at(promoted_at),
                "until": _at(promoted_at + 600),
            }
            promoted = _md(address, {"stableRevision": CANDIDATE, "postPromotion": watched})
            assert await verdicts.current(promoted, tick) is None  # the rollout is over; its evidence is kept
            findings = []
            for rate in (0.02, 0.02, 0.08, 0.08, 0.08):
                exporter.serve(CANDIDATE, 4000, int(4000 * rate))
                scraped(prometheus, exporter)
                tick = await _interval_ends(tick)
                finding = await verdicts.watch(promoted, tick)
                assert finding is not None and finding.revision == CANDIDATE
                findings.append(finding)
                if finding.alarm:
                    break
            assert [f.alarm for f in findings[:2]] == [False, False], [f.reason for f in findings]
            assert findings[-1].alarm and "has regressed since promotion" in findings[-1].reason

            # An operator restart: nothing in memory; the rollout and the watch are replayed.
            restarted = await PrometheusVerdicts(http).watch(promoted, tick)
            assert restarted is not None and restarted.alarm, restarted

    asyncio.run(scenario())
