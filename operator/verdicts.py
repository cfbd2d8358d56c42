"""Where the state machine's analysis input comes from.

:class:`PrometheusVerdicts` keeps one :class:`~cutover.analysis.Analysis` per rollout in memory,
ticks it every ``analysis.interval`` and, after an operator restart, rebuilds it by replaying the
rollout's intervals from Prometheus' history, so a restart changes no decision.

:class:`FileVerdicts` reads verdicts from files instead (``cutover operator --verdicts-from DIR``):
a development aid for driving rollouts by hand on a cluster without metrics, and what the
control-plane tests use to script verdict sequences. It is never the default.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from cutover.analysis import Analysis, Arms, MetricsUnavailable, PrometheusProvider, Result
from cutover.api.v1alpha1 import ModelDeployment, seconds

from .rollout import BASELINE_SUFFIX, AnalysisInput


class VerdictSource(Protocol):
    async def current(self, md: ModelDeployment, now: float) -> AnalysisInput | None:
        """The analysis input for the rollout in ``md.status`` (None when nothing rolls out)."""
        ...


def comparison(md: ModelDeployment) -> tuple[str, str, float] | None:
    """(candidate, baseline, started_at) of the rollout in progress."""
    status = md.status
    if status is None or status.candidate_revision is None or status.stable_revision is None:
        return None
    canary = md.spec.strategy.canary
    baseline = status.stable_revision + (BASELINE_SUFFIX if canary is not None and canary.baseline else "")
    started = status.rollout_started_at.timestamp() if status.rollout_started_at else time.time()
    return status.candidate_revision, baseline, started


@dataclass
class _Run:
    key: tuple[str, str, float]
    analysis: Analysis
    last: Result | None = None


class PrometheusVerdicts:
    """Sequential analysis against Prometheus, one run per ModelDeployment."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.runs: dict[str, _Run] = {}

    def forget(self, uid: str) -> None:
        self.runs.pop(uid, None)

    async def current(self, md: ModelDeployment, now: float) -> AnalysisInput | None:
        uid = md.metadata.uid or f"{md.metadata.namespace}/{md.metadata.name}"
        key = comparison(md)
        if key is None:
            self.forget(uid)
            return None
        run = self.runs.get(uid)
        spec = md.spec.analysis
        provider = PrometheusProvider(self.http, spec.prometheus.address, timeout=seconds(spec.prometheus.timeout))
        if run is None or run.key != key:
            source = "gateway" if md.spec.traffic.provider == "gateway" else "serving"
            analysis = Analysis(
                spec,
                namespace=md.metadata.namespace or "",
                model=md.spec.model.name,
                arms=Arms(key[0], key[1]),
                started_at=key[2],
                request_source=source,
            )
            run = self.runs[uid] = _Run(key, analysis)
            run.last = await analysis.catch_up(provider, now)  # rebuild after a restart, interval by interval
        step = analysis_interval(md)
        if run.last is None or now - run.analysis.last_tick >= step or run.last.verdict == "unavailable":
            run.last = await run.analysis.tick(provider, now)
        agreement = await _agreement(provider, md, key, now) if md.spec.strategy.type == "shadow" else None
        last = run.last
        return AnalysisInput(
            last.verdict, last.reason, last.consecutive_errors, status=last.status(), agreement=agreement
        )


def analysis_interval(md: ModelDeployment) -> float:
    return seconds(md.spec.analysis.interval)


async def _agreement(
    provider: PrometheusProvider, md: ModelDeployment, key: tuple[str, str, float], now: float
) -> float | None:
    """Share of mirrored requests on which the candidate agreed with stable, as the gateway
    counts them (cutover_gateway_shadow_comparisons_total{agree})."""
    window = f"{max(1, int(now - key[2]))}s"
    selector = (
        f'cutover_gateway_shadow_comparisons_total{{namespace="{md.metadata.namespace}",'
        f'model="{md.spec.model.name}",revision="{key[0]}"}}'
    )
    try:
        rows = await provider.instant(f"sum by (agree) (increase({selector}[{window}]))", now)
    except MetricsUnavailable:
        return None
    counts = {dict(labels).get("agree"): value for labels, value in rows.items()}
    total = sum(counts.values())
    return counts.get("true", 0.0) / total if total else None


class FileVerdicts:
    """Verdicts from ``DIR/<namespace>_<name>.json``: {"verdict": ..., "reason": ...,
    "agreement": ...}. A missing file means no verdict yet."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def current(self, md: ModelDeployment, now: float) -> AnalysisInput | None:
        if comparison(md) is None:
            return None
        path = self.directory / f"{md.metadata.namespace}_{md.metadata.name}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return AnalysisInput(
            data["verdict"],
            data.get("reason", f"verdict from {path.name}"),
            int(data.get("consecutiveErrors", 0)),
            agreement=data.get("agreement"),
        )
