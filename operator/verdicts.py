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
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from cutover.analysis import Analysis, Arms, MetricsUnavailable, PostPromotionWatch, PrometheusProvider, Result
from cutover.api import contract
from cutover.api.v1alpha1 import ModelDeployment, seconds

from . import load as autoscaler_load
from .kube import Kube
from .rollout import AnalysisInput, AnalysisPlan, WatchInput, comparison
from .rollout.autoscaling import Load
from .secrets import SecretUnavailable, secret_text


class VerdictSource(Protocol):
    async def current(self, md: ModelDeployment, now: float) -> AnalysisInput | None:
        """The analysis input for the rollout in ``md.status`` (None when nothing rolls out)."""
        ...

    async def watch(self, md: ModelDeployment, now: float) -> WatchInput | None:
        """The post-promotion watch's finding on ``md.status.postPromotion`` (None when no
        revision is being watched)."""
        ...

    async def load(self, md: ModelDeployment, revisions: Sequence[str], pods: int, now: float) -> Load:
        """What the autoscaler reads: the load on ``revisions`` (those taking live traffic,
        ``pods`` ready pods among them); a metric that cannot be read is None in it."""
        ...

    def drop(self, uid: str) -> None:
        """Forget everything kept about the object with this uid: it is gone."""
        ...


@dataclass
class _Run:
    key: AnalysisPlan
    analysis: Analysis
    last: Result | None = None
    agreement: float | None = None


@dataclass
class _Watch:
    key: tuple[str, float]
    """The watched revision and when it was promoted."""
    watch: PostPromotionWatch | None
    """None when the rollout left no rate to compare with."""
    last: WatchInput


class CredentialsUnavailable(SecretUnavailable):
    """The Secret named by analysis.prometheus.bearerTokenSecretRef cannot be read."""


class PrometheusVerdicts:
    """Sequential analysis against Prometheus, one run per ModelDeployment.

    With ``analysis.prometheus.bearerTokenSecretRef`` every query carries
    ``Authorization: Bearer <token>``, the token read from the Secret in the ModelDeployment's
    namespace each time metrics are read (so a rotated token is used at the next interval)."""

    def __init__(self, http: httpx.AsyncClient, kube: Kube | None = None) -> None:
        self.http = http
        self.kube = kube
        self.runs: dict[str, _Run] = {}
        self.finished: dict[str, _Run] = {}
        """The last ended rollout per object: the post-promotion watch starts from its evidence."""
        self.watches: dict[str, _Watch] = {}

    async def _headers(self, md: ModelDeployment) -> dict[str, str] | None:
        """The Authorization header for this ModelDeployment's Prometheus, or None without a token.
        Raises CredentialsUnavailable with what is wrong (Secret or key missing, not readable)."""
        ref = md.spec.analysis.prometheus.bearer_token_secret_ref
        if ref is None:
            return None
        field = "analysis.prometheus.bearerTokenSecretRef"
        try:
            token = await secret_text(self.kube, md.metadata.namespace or "", ref, field)
        except SecretUnavailable as err:
            raise CredentialsUnavailable(str(err)) from err
        return {"Authorization": f"Bearer {token}"}

    def drop(self, uid: str) -> None:
        """Forget the object's rollout, its last ended rollout and its watch (it is gone)."""
        self.runs.pop(uid, None)
        self.finished.pop(uid, None)
        self.watches.pop(uid, None)

    def forget(self, uid: str, md: ModelDeployment | None = None) -> None:
        """Drop the object's rollout; keep its evidence when the revision it promoted is watched."""
        run = self.runs.pop(uid, None)
        watched = md.status.post_promotion if md is not None and md.status else None
        if run is not None and watched is not None and watched.revision == run.key.candidate:
            self.finished[uid] = run

    def _provider(self, md: ModelDeployment, headers: dict[str, str] | None) -> PrometheusProvider:
        spec = md.spec.analysis.prometheus
        return PrometheusProvider(self.http, spec.address, timeout=seconds(spec.timeout), headers=headers)

    def _analysis(self, md: ModelDeployment, key: AnalysisPlan) -> Analysis:
        return Analysis(
            md.spec.analysis,
            namespace=md.metadata.namespace or "",
            model=md.spec.model.name,
            arms=Arms(key.candidate, key.baseline),
            started_at=key.started_at.timestamp(),
            request_source="gateway" if md.spec.traffic.provider == "gateway" else "serving",
        )

    async def watch(self, md: ModelDeployment, now: float) -> WatchInput | None:
        uid = md.metadata.uid or f"{md.metadata.namespace}/{md.metadata.name}"
        watched = md.status.post_promotion if md.status else None
        spec = md.spec.analysis.post_promotion
        if watched is None or watched.state != "Watching" or spec is None:
            self.watches.pop(uid, None)
            self.finished.pop(uid, None)
            return None
        key = (watched.revision, watched.promoted_at.timestamp())
        entry = self.watches.get(uid)
        interval = seconds(md.spec.analysis.interval)
        if entry is not None and entry.key == key and (entry.watch is None or now - entry.watch.last_tick < interval):
            return entry.last
        try:
            provider = self._provider(md, await self._headers(md))
        except CredentialsUnavailable as err:
            return WatchInput(watched.revision, False, f"metrics unavailable: {err}")
        if entry is None or entry.key != key:
            entry = self.watches[uid] = await self._start_watch(md, uid, provider, key)
        end = min(now, watched.until.timestamp())  # nothing after the watch's end is judged
        while entry.watch is not None and entry.watch.last_tick + interval <= end:  # whole intervals, in order
            found = await entry.watch.tick(provider, entry.watch.last_tick + interval)
            entry.last = WatchInput(watched.revision, found.alarm, found.reason)
            if found.alarm or found.reason.startswith("metrics unavailable"):
                break
        return entry.last

    async def _start_watch(
        self, md: ModelDeployment, uid: str, provider: PrometheusProvider, key: tuple[str, float]
    ) -> _Watch:
        """The rollout's evidence (kept from the rollout, or replayed from Prometheus after a
        restart) gives the rates the watched revision is held to."""
        watched, spec = md.status.post_promotion, md.spec.analysis.post_promotion  # type: ignore[union-attr]
        assert watched is not None and spec is not None
        rollout = AnalysisPlan(watched.revision, watched.baseline, watched.rollout_started_at)
        run = self.finished.pop(uid, None)
        if run is not None and run.key == rollout:
            analysis = run.analysis
        else:
            analysis = self._analysis(md, rollout)
            await analysis.catch_up(provider, key[1])
        watch = PostPromotionWatch(
            analysis, started_at=key[1], shift=spec.shift, h=math.log(spec.false_alarm_intervals)
        )
        if not watch.watches:
            reason = f"revision {watched.revision} served no requests in its rollout: no rate to hold it to"
            return _Watch(key, None, WatchInput(watched.revision, False, reason))
        return _Watch(key, watch, WatchInput(watched.revision, False, "watching"))

    async def load(self, md: ModelDeployment, revisions: Sequence[str], pods: int, now: float) -> Load:
        try:
            provider = self._provider(md, await self._headers(md))
        except CredentialsUnavailable as err:
            return Load({}, pods, f"metrics unavailable: {err}")
        return await autoscaler_load.read(provider, md, revisions, pods, now)

    async def current(self, md: ModelDeployment, now: float) -> AnalysisInput | None:
        uid = md.metadata.uid or f"{md.metadata.namespace}/{md.metadata.name}"
        key = comparison(md.spec, md.status)
        if key is None:
            self.forget(uid, md)
            return None
        run = self.runs.get(uid)
        interval = seconds(md.spec.analysis.interval)
        if run is not None and run.key == key and not _due(run, now, interval):
            return _input(key, run)  # nothing to read yet (nor a token to fetch)
        try:
            headers = await self._headers(md)
        except CredentialsUnavailable as err:
            errors = (run.last.consecutive_errors if run and run.last else 0) + 1
            return AnalysisInput(key, "unavailable", f"metrics unavailable: {err}", errors)
        provider = self._provider(md, headers)
        if run is None or run.key != key:
            analysis = self._analysis(md, key)
            run = self.runs[uid] = _Run(key, analysis)
            run.last = await analysis.catch_up(provider, now)  # rebuild after a restart, interval by interval
        if _due(run, now, interval):
            run.last = await run.analysis.tick(provider, now)
            if md.spec.strategy.type == "shadow":  # read with the metrics, not on every pass
                run.agreement = await _agreement(provider, md, key, now)
        return _input(key, run)


def _due(run: _Run, now: float, interval: float) -> bool:
    """Whether a run reads metrics now: it has no verdict yet, its last read failed, or an
    interval has passed since its last successful tick."""
    return run.last is None or run.last.verdict == "unavailable" or now - run.analysis.last_tick >= interval


def _input(key: AnalysisPlan, run: _Run) -> AnalysisInput:
    last = run.last
    assert last is not None
    return AnalysisInput(
        key, last.verdict, last.reason, last.consecutive_errors, status=last.status(), agreement=run.agreement
    )


async def _agreement(provider: PrometheusProvider, md: ModelDeployment, key: AnalysisPlan, now: float) -> float | None:
    """Share of mirrored requests on which the candidate agreed with stable since the rollout
    began, as the gateway counts them (the contract's shadow-comparisons counter, by ``agree``),
    from raw samples like every other count: ``increase()`` would extrapolate to the window's
    edges. None when nothing was compared yet or Prometheus cannot be read."""
    selector = (
        f'{contract.SHADOW_COMPARISONS.sample}{{namespace="{md.metadata.namespace}",'
        f'model="{md.spec.model.name}",revision="{key.candidate}"}}'
    )
    try:
        rows = await provider.increments(selector, ("agree",), key.started_at.timestamp(), now)
    except MetricsUnavailable:
        return None
    counts = {dict(labels).get("agree"): value for labels, value in rows.items()}
    total = sum(counts.values())
    return counts.get("true", 0.0) / total if total else None


class FileVerdicts:
    """Verdicts from ``DIR/<namespace>_<name>.json``: {"verdict": ..., "reason": ...,
    "agreement": ..., "watch": {"alarm": ..., "reason": ...}}. A missing file means no verdict
    yet."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def drop(self, uid: str) -> None:
        """Nothing to forget: every answer is read from its file."""

    def _read(self, md: ModelDeployment) -> tuple[str, dict[str, Any]] | None:
        """The file's name and contents for ``md``, or None when it is missing or not JSON."""
        path = self.directory / f"{md.metadata.namespace}_{md.metadata.name}.json"
        try:
            return path.name, json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    async def watch(self, md: ModelDeployment, now: float) -> WatchInput | None:
        watched = md.status.post_promotion if md.status else None
        read = self._read(md) if watched is not None and watched.state == "Watching" else None
        if watched is None or read is None or not read[1].get("watch"):
            return None
        name, found = read[0], read[1]["watch"]
        return WatchInput(watched.revision, bool(found["alarm"]), found.get("reason", f"scripted in {name}"))

    async def load(self, md: ModelDeployment, revisions: Sequence[str], pods: int, now: float) -> Load:
        """No metrics are read with --verdicts-from: the autoscaler holds the count."""
        return Load({}, pods, "no metrics with --verdicts-from")

    async def current(self, md: ModelDeployment, now: float) -> AnalysisInput | None:
        key = comparison(md.spec, md.status)
        read = self._read(md) if key is not None else None
        if key is None or read is None:
            return None
        name, data = read
        return AnalysisInput(
            key,
            data["verdict"],
            data.get("reason", f"verdict from {name}"),
            int(data.get("consecutiveErrors", 0)),
            agreement=data.get("agreement"),
        )
