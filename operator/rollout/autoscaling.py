"""Horizontal autoscaling with the Kubernetes HorizontalPodAutoscaler's algorithm, pure.

Source: the HPA documentation (kubernetes.io, "Horizontal Pod Autoscaling", sections
"Algorithm details", "Stabilization window", "Scaling policies", "Default Behavior") and the
controller it describes (pkg/controller/podautoscaler/horizontal.go, replica_calculator.go).
Read there, written here:

- a per-pod metric (GPU utilisation: the HPA's Pods metric), ``desired = ceil(pods * average /
  target)``, the average over the pods that report it; no change while ``|average / target -
  1| <= 0.1`` (the tolerance); pods that report nothing count as at the target when the others
  ask to scale down and as 0 when they ask to scale up; if that flips the direction or lands
  within the tolerance, no change;
- a metric summed over the model (in-flight requests: the HPA's External metric with an
  AverageValue target, as KEDA's Prometheus scaler feeds it), ``desired = ceil(total /
  target)``, with the same tolerance on ``total / (target * current)``;
- several metrics: the largest count wins; a metric that cannot be read blocks scaling down
  (and scaling at all when none can be read): the count is held;
- every recommendation is kept with its time; the count moves up only to the lowest one within
  the scale-up window (default 0 s) and down only to the highest one within the scale-down
  window (default 300 s);
- the default policies: up by at most max(100 %, 4 pods) per 15 s, down by at most 100 % per
  15 s, counted from the changes made within the period; then min and max clamp.

The HPA keeps recommendations and scale events in memory; here they live in the status
(``status.autoscaling``), so an operator restart forgets nothing. The HPA's sync period (15 s)
is how often the metrics are read (:func:`due`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from cutover.api.contract import ANNOTATION_SCALED_BY
from cutover.api.v1alpha1 import seconds
from cutover.api.v1alpha1.modeldeployment import (
    Autoscaling,
    AutoscalingStatus,
    ModelDeployment,
    Recommendation,
    ScaleEvent,
    ScalingLimit,
)

TOLERANCE = 0.1
"""The HPA's default --horizontal-pod-autoscaler-tolerance."""
SYNC_SECONDS = 15.0
"""The HPA's default --horizontal-pod-autoscaler-sync-period: metrics are read this often."""
DEFAULT_DOWN_WINDOW = 300.0
DEFAULT_UP_WINDOW = 0.0
RECOMMENDATIONS_KEPT = 64
"""Most recommendations kept in status (equal neighbours are merged first)."""

Metric = Literal["inFlight", "gpuUtilization"]


@dataclass(frozen=True)
class Policy:
    """One HPA scaling policy: change by at most ``value`` pods (``Pods``) or percent of the
    count at the start of the period (``Percent``) per ``period`` seconds."""

    kind: Literal["Pods", "Percent"]
    value: int
    period: float


@dataclass(frozen=True)
class Behavior:
    """The HPA's ``behavior``: stabilisation windows (seconds) and policies, the policy that
    allows the largest change winning (selectPolicy Max). Defaults are the HPA's."""

    up_window: float = DEFAULT_UP_WINDOW
    down_window: float = DEFAULT_DOWN_WINDOW
    up: tuple[Policy, ...] = (Policy("Percent", 100, 15.0), Policy("Pods", 4, 15.0))
    down: tuple[Policy, ...] = (Policy("Percent", 100, 15.0),)

    @classmethod
    def of(cls, spec: Autoscaling) -> Behavior:
        """The behaviour ``spec`` asks for: its windows, the default policies."""
        up, down = spec.scale_up_stabilization, spec.scale_down_stabilization
        return cls(
            up_window=seconds(up) if up is not None else DEFAULT_UP_WINDOW,
            down_window=seconds(down) if down is not None else DEFAULT_DOWN_WINDOW,
        )


@dataclass(frozen=True)
class Reading:
    """One metric read over the model's pods: the sum of the per-pod values and how many pods
    reported one (0: no series)."""

    metric: Metric
    total: float
    reporting: int

    @property
    def average(self) -> float | None:
        return self.total / self.reporting if self.reporting else None


@dataclass(frozen=True)
class Load:
    """What the autoscaler reads in one pass: one reading per metric with a target (None for
    one that could not be read, ``error`` saying why), and the ready pods of the revisions
    measured (those that take live traffic)."""

    readings: dict[Metric, Reading | None] = field(default_factory=dict)
    pods: int = 0
    error: str = ""


def metric_replicas(pods: int, reading: Reading, target: float) -> tuple[int, bool]:
    """Pods one metric asks for, and whether the tolerance held the count at ``pods``.

    ``pods``: the ready pods measured; ``reading.reporting`` of them reported a value (those
    that did not are filled in as the HPA does: at the target when scaling down, at 0 when
    scaling up). Raises ValueError for a reading with no reporting pod (there is nothing to
    scale on)."""
    average = reading.average
    if average is None:
        raise ValueError(f"no pod reported {reading.metric}")
    ratio = average / target
    missing = max(0, pods - reading.reporting)
    if not missing:
        if abs(ratio - 1.0) <= TOLERANCE:
            return pods, True
        return math.ceil(ratio * reading.reporting), False
    filled = reading.total + (missing * target if ratio < 1.0 else 0.0)
    new_ratio = filled / (reading.reporting + missing) / target
    if abs(new_ratio - 1.0) <= TOLERANCE or (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio):
        return pods, True
    wanted = math.ceil(new_ratio * (reading.reporting + missing))
    if (new_ratio < 1.0 and wanted > pods) or (new_ratio > 1.0 and wanted < pods):
        return pods, True
    return wanted, False


def total_replicas(current: int, total: float, target: float) -> tuple[int, bool]:
    """Pods a metric summed over the model asks for, held to an average ``target`` per pod,
    and whether the tolerance held the count at ``current``: the HPA's External metric with an
    AverageValue target (what KEDA's Prometheus scaler gives an HPA), ``ceil(total / target)``
    unless ``total / (target * current)`` is within the tolerance of 1.

    In-flight requests are scaled this way: their sum is what the pods must carry however it
    is spread, so a pod not scraped yet (just started) changes nothing, and the count does not
    depend on how many pods Prometheus saw."""
    if current and abs(total / (target * current) - 1.0) <= TOLERANCE:
        return current, True
    return math.ceil(total / target), False


@dataclass(frozen=True)
class Decision:
    """One autoscaling decision: the new count and why it is not what the metrics asked."""

    replicas: int
    limited_by: ScalingLimit
    message: str
    recommendations: tuple[Recommendation, ...]
    events: tuple[ScaleEvent, ...]


def _changed_within(events: tuple[ScaleEvent, ...], period: float, now: datetime) -> tuple[int, int]:
    """Pods added and pods removed by the events of the last ``period`` seconds."""
    since = now - timedelta(seconds=period)
    recent = [e.change for e in events if e.at > since]
    return sum(c for c in recent if c > 0), -sum(c for c in recent if c < 0)


def scale_up_limit(current: int, events: tuple[ScaleEvent, ...], policies: tuple[Policy, ...], now: datetime) -> int:
    """Most pods the scale-up policies allow now (never below ``current``)."""
    limit = current
    for policy in policies:
        added, removed = _changed_within(events, policy.period, now)
        start = current - added + removed
        proposed = start + policy.value if policy.kind == "Pods" else math.ceil(start * (1 + policy.value / 100))
        limit = max(limit, proposed)
    return limit


def scale_down_limit(current: int, events: tuple[ScaleEvent, ...], policies: tuple[Policy, ...], now: datetime) -> int:
    """Fewest pods the scale-down policies allow now (never above ``current``)."""
    limit = current
    for policy in policies:
        added, removed = _changed_within(events, policy.period, now)
        start = current - added + removed
        proposed = start - policy.value if policy.kind == "Pods" else int(start * (1 - policy.value / 100))
        limit = min(limit, proposed)
    return limit


def decide(
    current: int,
    proposal: int | None,
    minimum: int,
    maximum: int,
    now: datetime,
    recommendations: tuple[Recommendation, ...] = (),
    events: tuple[ScaleEvent, ...] = (),
    behavior: Behavior = Behavior(),
) -> Decision:
    """The HPA's step from ``current`` pods given what the metrics propose (None: no metric
    could be read, the count is held), the recommendations and scale events kept so far, and
    the clamps. Returns the new count, what limited it, and the history to keep."""
    if current > maximum or current < minimum:
        bound: ScalingLimit = "MaxReplicas" if current > maximum else "MinReplicas"
        wanted = min(max(current, minimum), maximum)
        text = f"{current} pods outside [{minimum}, {maximum}]: {wanted}"
        return Decision(wanted, bound, text, recommendations, _record(events, current, wanted, now, behavior))
    if proposal is None:
        return Decision(current, "MetricMissing", f"holding {current} pods", recommendations, events)
    kept = _keep(recommendations, proposal, now, behavior)
    up_since = now - timedelta(seconds=behavior.up_window)
    down_since = now - timedelta(seconds=behavior.down_window)
    up = min([r.replicas for r in kept if r.at >= up_since] or [proposal])
    down = max([r.replicas for r in kept if r.at >= down_since] or [proposal])
    stabilized = min(max(current, up), down)
    limited: ScalingLimit = ""
    text = f"metrics ask for {proposal} pods"
    if stabilized > proposal:
        limited, text = "ScaleDownStabilization", f"{text}; {down} recommended within the scale-down window"
    elif stabilized < proposal:
        limited, text = "ScaleUpStabilization", f"{text}; {up} recommended within the scale-up window"
    highest = scale_up_limit(current, events, behavior.up, now)
    lowest = scale_down_limit(current, events, behavior.down, now)
    top_reason: ScalingLimit = "ScaleUpPolicy" if highest < maximum else "MaxReplicas"
    bottom_reason: ScalingLimit = "ScaleDownPolicy" if lowest > minimum else "MinReplicas"
    top, bottom = min(highest, maximum), max(lowest, minimum)
    wanted = stabilized
    if wanted > top:
        wanted, limited, text = top, top_reason, f"{text}; at most {top} allowed ({top_reason})"
    elif wanted < bottom:
        wanted, limited, text = bottom, bottom_reason, f"{text}; at least {bottom} allowed ({bottom_reason})"
    return Decision(wanted, limited, text, kept, _record(events, current, wanted, now, behavior))


def _keep(
    recommendations: tuple[Recommendation, ...], proposal: int, now: datetime, behavior: Behavior
) -> tuple[Recommendation, ...]:
    """The recommendations to keep after adding ``proposal``: those inside the longer window,
    a run of equal ones merged into its newest (the windows only ask for the newest time)."""
    since = now - timedelta(seconds=max(behavior.up_window, behavior.down_window))
    kept = [r for r in recommendations if r.at >= since]
    if kept and kept[-1].replicas == proposal:
        kept.pop()
    kept.append(Recommendation(at=now, replicas=proposal))
    return tuple(kept[-RECOMMENDATIONS_KEPT:])


def _record(
    events: tuple[ScaleEvent, ...], current: int, wanted: int, now: datetime, behavior: Behavior
) -> tuple[ScaleEvent, ...]:
    """The scale events to keep: those inside the longest policy period, plus this change."""
    longest = max(p.period for p in (*behavior.up, *behavior.down))
    since = now - timedelta(seconds=longest)
    kept = tuple(e for e in events if e.at > since)
    return (*kept, ScaleEvent(at=now, change=wanted - current)) if wanted != current else kept


def scaled_by(md: ModelDeployment) -> str | None:
    """What the ``cutover.dev/scaled-by`` annotation says scales the model's pods instead of
    the operator (None without it)."""
    return md.metadata.annotations.get(ANNOTATION_SCALED_BY)


def targets(spec: Autoscaling) -> dict[Metric, int]:
    """The metrics ``spec`` scales on, with their per-pod targets."""
    out: dict[Metric, int] = {}
    if spec.target_in_flight is not None:
        out["inFlight"] = spec.target_in_flight
    if spec.target_gpu_utilization is not None:
        out["gpuUtilization"] = spec.target_gpu_utilization
    return out


def due(status: AutoscalingStatus | None, now: datetime) -> bool:
    """Whether the metrics are read in this pass: never read, or a sync period has passed."""
    return status is None or status.evaluated_at is None or (now - status.evaluated_at).total_seconds() >= SYNC_SECONDS


def autoscale(
    spec: Autoscaling, status: AutoscalingStatus | None, load: Load | None, now: datetime
) -> AutoscalingStatus:
    """The autoscaler's new status for one pass: unchanged until :func:`due`, then one HPA
    step from the count it last decided (``minReplicas`` the first time) on what ``load`` read.
    A metric without a series, or no load read at all, holds the count (MetricMissing)."""
    current = status.desired_replicas if status is not None else spec.min_replicas
    if status is not None and not due(status, now):
        return status
    wanted = targets(spec)
    if not wanted:
        held = decide(current, spec.min_replicas, spec.min_replicas, spec.max_replicas, now)
        return _status(current, held, now, "no target set: minReplicas pods")
    proposals: list[tuple[int, Metric, float, int, bool]] = []
    missing: list[str] = []
    for metric, target in wanted.items():
        reading = load.readings.get(metric) if load is not None else None
        if reading is None or reading.average is None or load is None:
            missing.append(f"{metric}: " + (load.error if load is not None and load.error else "no series"))
            continue
        if metric == "inFlight":
            replicas, tolerated = total_replicas(current, reading.total, float(target))
            average = reading.total / max(current, 1)
        else:
            replicas, tolerated = metric_replicas(max(load.pods, reading.reporting), reading, float(target))
            average = reading.total / reading.reporting
        proposals.append((replicas, metric, average, target, tolerated))
    best = max(proposals, default=None)
    blocked = best is None or (missing and best[0] < current)  # a missing metric never lets it scale down
    previous = tuple(status.recommendations) if status is not None else ()
    events = tuple(status.scale_events) if status is not None else ()
    decision = decide(
        current,
        None if blocked or best is None else best[0],
        spec.min_replicas,
        spec.max_replicas,
        now,
        previous,
        events,
        Behavior.of(spec),
    )
    if best is not None and best[4] and decision.limited_by == "" and decision.replicas == current:
        decision = replace(decision, limited_by="Tolerance", message=f"{decision.message}; within the 10% tolerance")
    text = decision.message + (f"; not read: {', '.join(missing)}" if missing else "")
    out = _status(current, decision, now, text)
    if best is None:
        return out
    return out.model_copy(update={"metric": best[1], "value": round(best[2], 4), "target": best[3]})


def _status(current: int, decision: Decision, now: datetime, message: str) -> AutoscalingStatus:
    return AutoscalingStatus(
        current_replicas=current,
        desired_replicas=decision.replicas,
        limited_by=decision.limited_by,
        message=message,
        evaluated_at=now,
        recommendations=list(decision.recommendations),
        scale_events=list(decision.events),
    )
