"""``attributionShift`` end to end: two `cutover serve` processes sampling every answered row for
explanations, the stable revision's model relying on one feature and the candidate's on another,
scraped by the real Prometheus server; the analysis rolls the candidate back with every row each
revision explained counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cutover.analysis import Analysis, Arms, Result
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec
from tests.analysis.ticking import ticks
from tests.serving.support import Serving, relying_on
from tests.support.prometheus import Prometheus
from tests.support.waiting import wait_until

STABLE, CANDIDATE = "1", "2"
"""Versions; `Serving` names their revisions rev-1 and rev-2."""
ROWS = 40


@pytest.fixture
def revisions(tmp_path: Path) -> Iterator[dict[str, Serving]]:
    served = {
        version: Serving(
            tmp_path,
            *("--format", "onnx", "--model-uri", str(relying_on(tmp_path / f"v{version}.onnx", feature))),
            *("--explain-sample-rate", "1"),
            version=version,
        ).start()
        for version, feature in ((STABLE, 0), (CANDIDATE, 2))
    }
    yield served
    for serving in served.values():
        serving.stop()


@pytest.fixture
def prometheus(tmp_path: Path, revisions: dict[str, Serving]) -> Iterator[Prometheus]:
    targets = [f"127.0.0.1:{s.port}" for s in revisions.values()]
    server = Prometheus(tmp_path, [{"job_name": "serving", "static_configs": [{"targets": targets}]}])
    server.start()
    yield server
    server.stop()


def send(serving: Serving, rows: np.ndarray) -> None:
    """Infer ``rows`` and wait until the pod has explained every one of them."""
    body = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    assert serving.post("/v2/models/classifier/infer", body)[0] == 200
    wait_until(lambda: not serving.metric("cutover_attribution_samples_pending"), 30, "the sampled rows explained")


async def rollout(prometheus: Prometheus, revisions: dict[str, Serving]) -> list[Result]:
    spec = AnalysisSpec.model_validate(
        {
            "interval": "2s",
            "minDuration": "2s",
            "minSamples": 50,
            "metrics": [{"name": "reasons", "builtin": "attributionShift", "thresholdRange": {"max": 0.2}}],
        }
    )
    arms = Arms(f"rev-{CANDIDATE}", f"rev-{STABLE}")
    analysis = Analysis(spec, namespace="tests", model="classifier", arms=arms, started_at=time.time())
    rng = np.random.default_rng(9)

    def feed(_: int) -> None:
        for serving in revisions.values():
            send(serving, rng.normal(2.0, 1.0, (ROWS, 4)))
        for serving in revisions.values():
            explained = serving.metric("cutover_attribution_top_feature_total")
            prometheus.wait_for(
                f'sum(cutover_attribution_top_feature_total{{revision="rev-{serving.version}"}}) == {explained}'
            )

    return await ticks(analysis, prometheus, range(5), feed, until="rollback")


def test_a_candidate_relying_on_another_feature_is_rolled_back(
    prometheus: Prometheus, revisions: dict[str, Serving]
) -> None:
    results = asyncio.run(rollout(prometheus, revisions))
    last = results[-1]
    assert last.verdict == "rollback", [r.reason for r in results]
    [evidence] = last.evidence
    assert "candidate 'input[2]', baseline 'input[0]'" in evidence.reason
    explained = {v: s.metric("cutover_attribution_top_feature_total") for v, s in revisions.items()}
    assert (evidence.candidate_samples, evidence.baseline_samples) == (explained[CANDIDATE], explained[STABLE])
    assert evidence.estimate == 1.0  # no row's top feature in common
