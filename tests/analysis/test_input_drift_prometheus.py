"""``inputDrift`` through the real Prometheus server: two revisions' serving exporters (the
registry `cutover serve` builds, binning on the sample models' training deciles), one sent rows
like its training data and one rows moved away from it; the analysis rolls back the second,
counting every row sent and none from before the rollout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import start_http_server

from cutover.analysis import Analysis, Arms, Result
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec
from cutover.serving import sample_models
from cutover.serving.drift import InputBinning
from cutover.serving.metrics import ServingMetrics
from tests.analysis.ticking import ticks
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus

STABLE, CANDIDATE = "5f7c9d1e", "a1b2c3d4"
BINNING = InputBinning.parse(sample_models.training_statistics(), ("a", "b", "c", "d"), sample_models.FEATURES)


class Revision:
    """One revision's serving metrics on a port of its own, as one pod exports them."""

    def __init__(self, revision: str) -> None:
        assert BINNING is not None
        self.metrics = ServingMetrics("shop", "ranker", revision, lambda: 0.0, scores_out_of_distribution=True)
        self.metrics.watch_inputs(BINNING)
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.metrics.registry)
        self.sent = 0

    def serve(self, rows: np.ndarray) -> None:
        assert BINNING is not None
        self.metrics.input_rows(BINNING.counts(rows.astype(np.float64)))
        self.sent += len(rows)


@pytest.fixture
def revisions() -> Iterator[dict[str, Revision]]:
    served = {revision: Revision(revision) for revision in (STABLE, CANDIDATE)}
    yield served
    for revision in served.values():
        revision.server.shutdown()


@pytest.fixture
def prometheus(tmp_path: Path, revisions: dict[str, Revision]) -> Iterator[Prometheus]:
    targets = [f"127.0.0.1:{r.port}" for r in revisions.values()]
    server = Prometheus(tmp_path, [{"job_name": "serving", "static_configs": [{"targets": targets}]}])
    server.start()
    yield server
    server.stop()


def scraped(prometheus: Prometheus, revisions: dict[str, Revision]) -> None:
    for revision, served in revisions.items():
        prometheus.wait_for(
            f'sum(cutover_input_feature_rows_total{{revision="{revision}",feature="a"}}) == {served.sent}'
        )


async def rollout(prometheus: Prometheus, revisions: dict[str, Revision]) -> list[Result]:
    for revision in revisions.values():
        revision.serve(sample_models.sample_inputs(500, seed=40, shift=6.0))  # before the rollout: not counted
    scraped(prometheus, revisions)
    spec = AnalysisSpec.model_validate(
        {
            "interval": "2s",
            "minDuration": "2s",
            "minSamples": 200,
            "metrics": [{"name": "drift", "builtin": "inputDrift", "thresholdRange": {"max": 0.2}}],
        }
    )
    analysis = Analysis(spec, namespace="shop", model="ranker", arms=Arms(CANDIDATE, STABLE), started_at=time.time())

    def feed(seed: int) -> None:
        revisions[STABLE].serve(sample_models.sample_inputs(300, seed=seed))
        revisions[CANDIDATE].serve(sample_models.sample_inputs(300, seed=seed + 100, shift=1.5))
        scraped(prometheus, revisions)

    return await ticks(analysis, prometheus, range(41, 46), feed, until="rollback")


def test_a_candidate_sent_drifted_rows_is_rolled_back_with_every_row_counted(
    prometheus: Prometheus, revisions: dict[str, Revision]
) -> None:
    results = asyncio.run(rollout(prometheus, revisions))
    last = results[-1]
    assert last.verdict == "rollback", [r.reason for r in results]
    [evidence] = last.evidence
    ticks = len(results)
    assert (evidence.candidate_samples, evidence.baseline_samples) == (300 * ticks, 300 * ticks)
    assert "input drift of the candidate" in evidence.reason and "baseline feature" in evidence.reason
