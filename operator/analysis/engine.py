"""The analysis engine: every ``analysis.interval`` it reads one interval of every metric for the
candidate and baseline revisions, feeds the sequential tests, and returns a verdict with its
evidence. It holds no clock and no cluster client; the operator calls :meth:`Analysis.tick`
with the time and a provider.

The builtin metrics read the series the serving runtime and the gateway export. These names are
a contract between the components:

==================================================  =========================================
series                                              labels (besides namespace, model, revision)
==================================================  =========================================
``cutover_{gateway,serving}_requests_total``         ``code`` (HTTP status)
``cutover_{gateway,serving}_request_duration_seconds``  histogram (``le``)
``cutover_predictions_total``                       —
``cutover_prediction_confidence``                   histogram (``le``) of the top-class probability
``cutover_out_of_distribution_total``               —
``cutover_safety_violations_total``                 ``filter``, ``action``
==================================================  =========================================

Requests and latency come from the gateway when it routes the traffic (it sees every answer,
including those of a crashing pod), else from the serving pods.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

from cutover.api.v1alpha1 import seconds
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec, AnalysisStatus, MetricEvidence, MetricSpec

from .cusum import BinomialCusum
from .histograms import exceedances
from .judges import ConfidenceJudge, CountJudge, Counts, Evidence, Histogram, LatencyJudge, Verdict, decide
from .provider import Labels, MetricProvider, MetricsUnavailable, render

RequestSource = Literal["gateway", "serving"]
LOW_CONFIDENCE = 0.5
"""Default top-class probability at or below which a prediction counts as low-confidence."""


@dataclass(frozen=True)
class Arms:
    """The revisions compared: the candidate, and the stable or fresh-baseline revision."""

    candidate: str
    baseline: str


@dataclass(frozen=True)
class Result:
    """One tick's verdict, reason and evidence."""

    time: float
    verdict: Verdict
    reason: str
    evidence: tuple[Evidence, ...] = ()
    consecutive_errors: int = 0

    def status(self) -> AnalysisStatus:
        """The result as ModelDeployment ``status.lastAnalysis``."""
        return AnalysisStatus(
            time=datetime.fromtimestamp(self.time, UTC),
            verdict=self.verdict,
            reason=self.reason,
            # Evidence carries the API's fields plus `critical`, which the decision rule uses.
            metrics=[
                MetricEvidence(**{k: v for k, v in asdict(ev).items() if k != "critical"}, p_value=ev.p_value)
                for ev in self.evidence
            ],
        )


@dataclass
class _Tick:
    """Queries of one tick, each made once however many metrics need it."""

    provider: MetricProvider
    start: float
    end: float
    cache: dict[tuple[str, tuple[str, ...]], dict[Labels, float]] = field(default_factory=dict)

    async def increments(self, selector: str, by: tuple[str, ...]) -> dict[Labels, float]:
        key = (selector, by)
        if key not in self.cache:
            self.cache[key] = await self.provider.increments(selector, by, self.start, self.end)
        return self.cache[key]


class Analysis:
    """Sequential analysis of one rollout: candidate against baseline, metric by metric."""

    def __init__(
        self,
        spec: AnalysisSpec,
        *,
        namespace: str,
        model: str,
        arms: Arms,
        started_at: float,
        request_source: RequestSource = "gateway",
        low_confidence: float = LOW_CONFIDENCE,
    ) -> None:
        self.spec, self.namespace, self.model, self.arms = spec, namespace, model, arms
        self.started_at = started_at
        self.last_tick = started_at
        self.request_source = request_source
        self.consecutive_errors = 0
        for metric in spec.metrics:  # a template error is a spec error: say so before any query
            if metric.prometheus is not None:
                variables = dict.fromkeys(("model", "namespace", "revision", "interval"), "x")
                render(metric.prometheus.events, variables)
                render(metric.prometheus.total, variables)
        share = spec.alpha / len(spec.metrics)
        self.judges = {m.name: self._judge(m, share, low_confidence) for m in spec.metrics}

    def _judge(self, metric: MetricSpec, share: float, low_confidence: float) -> CountJudge:
        limits = metric.threshold_range
        common = dict(
            alpha=self.spec.alpha,
            alpha_share=share,
            failure_margin=metric.failure_margin,
            pass_margin=metric.pass_margin,
            direction=metric.direction,
            critical=metric.critical,
            threshold_min=limits.min if limits else None,
            threshold_max=limits.max if limits else None,
        )
        if metric.builtin == "latency":
            assert metric.latency_threshold is not None
            return LatencyJudge(metric.name, threshold_seconds=seconds(metric.latency_threshold), **common)
        if metric.builtin == "predictionConfidence":
            return ConfidenceJudge(metric.name, low_confidence=low_confidence, **common)
        what = {
            "errorRate": "errors",
            "outOfDistributionRate": "out-of-distribution predictions",
            "safetyViolations": "safety violations",
        }.get(metric.builtin or "", "events")
        return CountJudge(metric.name, what=what, **common)

    def _selector(self, name: str, arms: Arms) -> str:
        revisions = "|".join(sorted({arms.candidate, arms.baseline}))
        return f'{name}{{namespace="{self.namespace}",model="{self.model}",revision=~"{revisions}"}}'

    async def _counts(
        self, tick: _Tick, events: str, trials: str, *, event_codes: bool = False, arms: Arms | None = None
    ) -> tuple[Counts, Counts]:
        arms = arms or self.arms
        if event_codes:
            by_code = await tick.increments(self._selector(trials, arms), ("revision", "code"))
            _require(by_code, arms, trials)
            out = []
            for revision in (arms.candidate, arms.baseline):
                mine = {k: v for k, v in by_code.items() if dict(k)["revision"] == revision}
                errors = sum(v for k, v in mine.items() if dict(k)["code"].startswith("5"))
                out.append(Counts(errors, sum(mine.values())))
            return out[0], out[1]
        hits = await tick.increments(self._selector(events, arms), ("revision",))
        total = await tick.increments(self._selector(trials, arms), ("revision",))
        _require(total, arms, trials)
        c, b = ((("revision", r),) for r in (arms.candidate, arms.baseline))
        return (Counts(min(hits.get(c, 0.0), total[c]), total[c]), Counts(min(hits.get(b, 0.0), total[b]), total[b]))

    async def _histograms(self, tick: _Tick, name: str, arms: Arms | None = None) -> tuple[Histogram, Histogram]:
        arms = arms or self.arms
        by_le = await tick.increments(self._selector(f"{name}_bucket", arms), ("revision", "le"))
        _require({(("revision", dict(k)["revision"]),): v for k, v in by_le.items()}, arms, name)
        out = []
        for revision in (arms.candidate, arms.baseline):
            rows = sorted((float(dict(k)["le"]), v) for k, v in by_le.items() if dict(k)["revision"] == revision)
            finite = [(le, v) for le, v in rows if le != float("inf")]
            total = next((v for le, v in rows if le == float("inf")), finite[-1][1] if finite else 0.0)
            out.append(Histogram(tuple(le for le, _ in finite), (*(v for _, v in finite), total)))
        return out[0], out[1]

    async def _custom(self, tick: _Tick, metric: MetricSpec) -> tuple[Counts, Counts]:
        assert metric.prometheus is not None
        arms = []
        for revision in (self.arms.candidate, self.arms.baseline):
            variables = {
                "model": self.model,
                "namespace": self.namespace,
                "revision": revision,
                "interval": f"{max(1, round(tick.end - tick.start))}s",
            }
            events = sum((await tick.provider.instant(render(metric.prometheus.events, variables), tick.end)).values())
            trials = sum((await tick.provider.instant(render(metric.prometheus.total, variables), tick.end)).values())
            arms.append(Counts(float(min(round(events), round(trials))), float(round(trials))))
        return arms[0], arms[1]

    async def _fetch(self, tick: _Tick, metric: MetricSpec) -> Callable[[], None]:
        """Read one metric's interval; return the update to apply once every read succeeded."""
        judge = self.judges[metric.name]
        src = f"cutover_{self.request_source}"
        if metric.prometheus is not None:
            counts = await self._custom(tick, metric)
        elif metric.builtin == "errorRate":
            counts = await self._counts(tick, "", f"{src}_requests_total", event_codes=True)
        elif metric.builtin in ("latency", "predictionConfidence"):
            name = f"{src}_request_duration_seconds" if metric.builtin == "latency" else "cutover_prediction_confidence"
            histograms = await self._histograms(tick, name)
            assert isinstance(judge, LatencyJudge | ConfidenceJudge)
            return lambda: judge.update_histograms(*histograms)
        elif metric.builtin == "outOfDistributionRate":
            counts = await self._counts(tick, "cutover_out_of_distribution_total", "cutover_predictions_total")
        else:
            counts = await self._counts(tick, "cutover_safety_violations_total", "cutover_serving_requests_total")
        return lambda: judge.update(*counts)

    async def tick(self, provider: MetricProvider, now: float) -> Result:
        """Read the interval since the last successful tick and decide. When metrics cannot be
        read, the verdict is ``unavailable``, nothing is updated, and the next successful tick
        covers the whole gap: an outage never resets or skews the evidence."""
        tick = _Tick(provider, self.last_tick, now)
        try:
            updates = [await self._fetch(tick, metric) for metric in self.spec.metrics]
        except MetricsUnavailable as err:
            self.consecutive_errors += 1
            return Result(now, "unavailable", f"metrics unavailable: {err}", consecutive_errors=self.consecutive_errors)
        for update in updates:
            update()
        self.consecutive_errors = 0
        self.last_tick = now
        return self.judge(now)

    def judge(self, now: float) -> Result:
        """The verdict from the evidence so far (no queries)."""
        metrics = {m.name: m for m in self.spec.metrics}
        evidence = [j.evidence(metrics[name].min_samples or self.spec.min_samples) for name, j in self.judges.items()]
        samples_met = all(
            e.candidate_samples >= (metrics[e.name].min_samples or self.spec.min_samples)
            and e.baseline_samples >= (metrics[e.name].min_samples or self.spec.min_samples)
            for e in evidence
        )
        duration_met = now - self.started_at >= seconds(self.spec.min_duration)
        verdict, reason = decide(evidence, min_samples_met=samples_met, min_duration_met=duration_met)
        return Result(now, verdict, reason, tuple(evidence))

    async def catch_up(self, provider: MetricProvider, now: float) -> Result | None:
        """Replay every whole interval from the last tick up to ``now`` (after an operator
        restart the evidence is rebuilt from Prometheus' history, exactly as it was)."""
        step = seconds(self.spec.interval)
        result = None
        while self.last_tick + step <= now:
            result = await self.tick(provider, self.last_tick + step)
            if result.verdict == "unavailable":
                break
        return result


def _require(values: dict[Labels, float], arms: Arms, name: str) -> None:
    """No series at all for an arm means there is no data, not zero traffic."""
    for revision in (arms.candidate, arms.baseline):
        if not any(dict(k).get("revision") == revision for k in values):
            raise MetricsUnavailable(f"no samples of {name} for revision {revision}")


@dataclass(frozen=True)
class WatchResult:
    """One post-promotion check: whether any watched rate has risen, and the statistics."""

    time: float
    alarm: bool
    reason: str
    statistics: dict[str, float] = field(default_factory=dict)


class PostPromotionWatch:
    """CUSUM on a promoted revision's error rate and slow-request rate against the rates it
    showed during its rollout. Alerting (AlertRule) and automatic rollback read :meth:`tick`."""

    def __init__(self, analysis: Analysis, *, started_at: float, shift: float = 2.0, h: float = math.log(1000)) -> None:
        self.analysis = analysis
        self.revision = analysis.arms.candidate
        self.last_tick = started_at
        self.watches: dict[str, BinomialCusum] = {}
        for metric in analysis.spec.metrics:
            judge = analysis.judges[metric.name]
            if metric.builtin not in ("errorRate", "latency") or not judge.test.candidate_trials:
                continue
            trials = float(judge.test.candidate_trials)
            # Half an event of prior keeps a clean rollout from setting p0 = 0 (no alarm possible).
            p0 = (float(judge.test.candidate_events) + 0.5) / (trials + 1.0)
            self.watches[metric.name] = BinomialCusum(p0=p0, shift=shift, h=h)

    async def tick(self, provider: MetricProvider, now: float) -> WatchResult:
        analysis, metrics = self.analysis, {m.name: m for m in self.analysis.spec.metrics}
        tick = _Tick(provider, self.last_tick, now)
        src = f"cutover_{analysis.request_source}"
        arms = Arms(self.revision, self.revision)
        try:
            observed = {}
            for name in self.watches:
                metric = metrics[name]
                if metric.builtin == "errorRate":
                    counts, _ = await analysis._counts(tick, "", f"{src}_requests_total", event_codes=True, arms=arms)
                else:
                    assert metric.latency_threshold is not None
                    histogram, _ = await analysis._histograms(tick, f"{src}_request_duration_seconds", arms=arms)
                    events, trials = exceedances(
                        histogram.edges, histogram.cumulative, seconds(metric.latency_threshold)
                    )
                    counts = Counts(float(events), float(trials))
                observed[name] = counts
        except (MetricsUnavailable, ValueError) as err:
            return WatchResult(now, False, f"metrics unavailable: {err}")
        self.last_tick = now
        for name, counts in observed.items():
            self.watches[name].update(counts.events, counts.trials)
        risen = [n for n, w in self.watches.items() if bool(w.alarmed)]
        stats = {n: float(w.statistic) for n, w in self.watches.items()}
        if risen:
            detail = ", ".join(
                f"{n} above {self.watches[n].p0:.3g} (CUSUM {stats[n]:.1f} >= {self.watches[n].h:.1f})" for n in risen
            )
            return WatchResult(now, True, f"revision {self.revision} has regressed since promotion: {detail}", stats)
        return WatchResult(now, False, "no rise since promotion", stats)
