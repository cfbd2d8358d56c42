"""The status a pass writes: phase, message and conditions, from the state the pass reached.

Conditions are the contract (``kubectl wait --for=condition=Promoted``, Argo CD and Flux read
them); phase and message are for people. Reconciling and Stalled are the conditions kstatus
(sigs.k8s.io/cli-utils ``pkg/kstatus``, what Flux's health checks run) reads first, then Ready,
see :func:`gitops_conditions`; Argo CD's health check (charts/cutover/files/argocd) reads them
with the phase. Each condition keeps its lastTransitionTime while its status stays the same.
Pod problems and waits for a person are told once, as an Event, when they first show.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from cutover.api.contract import ANNOTATION_SCALED_BY
from cutover.api.v1alpha1 import Condition
from cutover.api.v1alpha1.modeldeployment import Phase

from . import reasons
from .autoscaling import scaled_by, targets
from .state import Pass, elapsed
from .traffic import table
from .types import BASELINE_SUFFIX, Plan, comparison
from .workloads import candidate_wanted, workloads

if TYPE_CHECKING:
    from ..pods import PodProblem

READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
PROMOTED: Final = "Promoted"
ROLLED_BACK: Final = "RolledBack"
ANALYSIS_AVAILABLE: Final = "AnalysisAvailable"
GPU_CAPACITY: Final = "GPUCapacity"
SAFETY_POLICY_READY: Final = "SafetyPolicyReady"
SCALING_ACTIVE: Final = "ScalingActive"
SCALING_LIMITED: Final = "ScalingLimited"
RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"
"""Condition types, in the order they are written."""

HANDLED_REQUESTS_KEPT = 20
"""status.handledRequests keeps this many, newest first."""


def condition(
    type_: str, ok: bool | None, reason: str, message: str, old: list[Condition], now: datetime, generation: int | None
) -> Condition:
    """A condition of ``type_`` (status Unknown for None), keeping its lastTransitionTime from
    ``old`` while its status stays the same."""
    status = "Unknown" if ok is None else "True" if ok else "False"
    previous = next((c for c in old if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def finish(p: Pass, desired: str) -> Plan:
    """The plan for the state the pass reached: workloads, traffic table and the status to write."""
    md = p.md
    found, swap = workloads(p)
    if swap and p.state.candidate_revision is not None and not p.state.surge_free:
        p.state = replace(p.state, surge_free=True)
    traffic = table(p, found)
    state = p.state
    stable, candidate = state.stable_revision, state.candidate_revision
    analysis = p.analysis
    replicas = p.replicas
    stable_ready = p.ready(stable) if stable else 0
    candidate_weight = next((t.weight for t in traffic if t.revision == candidate), 0) if candidate else 0

    # Pod problems of the revisions that are short of ready pods: what status reports.
    asked = {w.revision: w.replicas for w in found}
    shown = {r: pp for r, pp in p.inputs.pod_problems.items() if r in asked and p.ready(r) < asked[r]}
    stable_problem = shown.get(stable or "")
    old = p.stored.conditions
    gen = md.metadata.generation
    before = md.status
    phase: Phase
    human = p.strategy.awaiting_human(p, p.ready(candidate)) if candidate is not None else None
    held = p.safety_hold
    if candidate is not None:
        phase = "Paused" if state.paused or human or held else "Progressing"
        message = rollout_message(p, candidate_weight, human, shown)
    elif state.fallback_revision is not None:
        fallback_ready = p.ready(state.fallback_revision)
        serving = "serves all traffic" if fallback_ready else "is starting and will serve all traffic"
        phase, message = (
            "Degraded",
            f"fallback: revision {state.fallback_revision} {serving} instead of stable {stable} "
            f"({state.fallback_reason}); kubectl cutover resume ends it",
        )
    elif state.phase == "RolledBack" and (state.rejected_revision is not None or desired != stable):
        phase, message = "RolledBack", state.message
    elif replicas == 0:
        phase, message = "Healthy", f"revision {stable} scaled to 0 replicas"
    elif stable_ready >= replicas:
        phase, message = "Healthy", f"revision {stable} serving with {stable_ready}/{replicas} ready pods"
    elif stable_ready > 0:
        phase, message = "Degraded", f"revision {stable}: {stable_ready}/{replicas} pods ready"
    else:
        phase, message = "Pending", f"waiting for pods of revision {stable}"
    if candidate is None and stable_ready == 0 and replicas > 0:
        # Nothing serves, and nothing rolls out that could end it: bounded like every wait.
        unready = next((c for c in old if c.type == READY and c.status == "False"), None)
        waited = elapsed(unready.last_transition_time, p.now) if unready else 0.0
        if waited > md.spec.progress_deadline_seconds:
            lost = f"revision {stable} has had no ready pod for {waited:.0f}s"
            message = f"{message}; {lost}" if phase == "RolledBack" else lost
            phase = "Failed"
            if before is None or before.phase != "Failed":
                detail = f": {stable_problem.describe()}" if stable_problem else ""
                p.event(reasons.PROGRESS_DEADLINE_EXCEEDED, lost + detail, warning=True)
    if stable_problem is not None and candidate is None and phase != "RolledBack":
        message += f": {stable_problem.describe()}"
    waiting = held is not None and candidate is None and desired not in (stable, state.rejected_revision)
    if waiting and state.fallback_revision is None:
        message += f"; rollout of {desired} waits for the SafetyPolicy: {held}"
    # Each kind of problem is told once, as an Event, when it first shows in the status; its
    # text carries counters (pods, restarts) that change without anything new to say.
    known = " ".join([before.message, *(c.message for c in before.conditions)]) if before else ""
    for revision, problem in shown.items():
        if f" {problem.reason}" not in known:
            p.event(reasons.PODS_NOT_READY, f"revision {revision}: {problem.describe()}", warning=True)
    if phase == "Paused" and human and (before is None or before.phase != "Paused"):
        p.event(reasons.AWAITING_PROMOTION, human)

    def make(type_: str, ok: bool | None, reason: str, text: str) -> Condition:
        return condition(type_, ok, reason, text, old, p.now, gen)

    conditions = [
        make(
            READY,
            stable_ready > 0 or replicas == 0,  # scaled to zero as asked: settled, as a Deployment's Available
            reasons.SERVING
            if stable_ready
            else reasons.SCALED_TO_ZERO
            if replicas == 0
            else stable_problem.reason
            if stable_problem
            else reasons.NO_READY_PODS,
            f"{stable_ready}/{replicas} pods of stable revision {stable} ready"
            + (f"; {stable_problem.describe()}" if stable_problem else ""),
        ),
        make(
            PROGRESSING,
            candidate is not None and not state.paused and not human and not held,
            reasons.PAUSED
            if state.paused
            else reasons.SAFETY_POLICY_NOT_READY
            if held and (candidate or waiting)
            else reasons.AWAITING_PROMOTION
            if human
            else reasons.ROLLOUT_IN_PROGRESS
            if candidate
            else reasons.NO_ROLLOUT,
            message
            if candidate
            else f"rollout of {desired} waits for the SafetyPolicy: {held}"
            if waiting
            else "no rollout in progress",
        ),
    ]
    promoted = any(e.reason == reasons.PROMOTED for e in p.events)
    prev_promoted = next((c for c in old if c.type == PROMOTED), None)
    if promoted:
        conditions.append(make(PROMOTED, True, reasons.PROMOTED, f"revision {stable} promoted"))
    elif candidate is not None:
        conditions.append(make(PROMOTED, False, reasons.ROLLOUT_IN_PROGRESS, f"rolling out {candidate}"))
    elif prev_promoted is not None:
        conditions.append(prev_promoted)
    rolled_back = (state.phase == "RolledBack" or phase == "RolledBack") and candidate is None
    conditions.append(
        make(
            ROLLED_BACK,
            rolled_back,
            reasons.ROLLED_BACK if rolled_back else reasons.NOT_ROLLED_BACK,
            state.message if rolled_back else "",
        )
    )
    if analysis is not None and candidate is not None:
        limit = md.spec.analysis.consecutive_error_limit
        available = not (analysis.verdict == "unavailable" and analysis.consecutive_errors >= max(1, limit))
        conditions.append(
            make(
                ANALYSIS_AVAILABLE,
                available,
                reasons.METRICS_AVAILABLE if available else reasons.METRICS_UNAVAILABLE,
                analysis.reason if not available else "metrics are being read",
            )
        )
    elif (prev := next((c for c in old if c.type == ANALYSIS_AVAILABLE), None)) is not None:
        conditions.append(prev)
    capacity = p.inputs.capacity
    if capacity is not None:
        # Pods still to place: the candidate's, or the stable ones not ready yet.
        needed = candidate_wanted(p) if candidate else max(0, replicas - stable_ready)
        enough = capacity.free_pods >= needed
        reason = reasons.SUFFICIENT if enough else (reasons.SURGE_FREE if swap else reasons.INSUFFICIENT_GPU_CAPACITY)
        text = (
            f"{capacity.free_pods} more pods of {capacity.per_pod}x {capacity.resource} fit; "
            f"the rollout needs {needed}"
            + ("; trading stable replicas for candidate ones" if swap and not enough else "")
            + (f" ({capacity.detail})" if capacity.detail else "")
        )
        conditions.append(make(GPU_CAPACITY, enough, reason, text))
        if not enough and md.spec.strategy.surge == "always" and candidate is not None:
            phase, message = "Progressing", f"waiting for GPU capacity: {text}"

    safety = p.inputs.safety
    if safety is not None:
        conditions.append(make(SAFETY_POLICY_READY, safety.ready, safety.reason, safety.message))
        told = next((c for c in old if c.type == SAFETY_POLICY_READY), None)
        now_status = "Unknown" if safety.ready is None else str(safety.ready)
        if told is None or (told.status, told.reason) != (now_status, safety.reason):
            if not safety.ready:
                hold = f"{safety.message}; rollouts hold until it is ready"
                p.event(reasons.SAFETY_POLICY_NOT_READY, hold, warning=True)
            elif told is not None:
                p.event(reasons.SAFETY_POLICY_READY, safety.message)

    conditions.extend(scaling_conditions(p, make))
    progressing = next(c for c in conditions if c.type == PROGRESSING)
    conditions.extend(gitops_conditions(p, phase, message, progressing, stable_ready < replicas, waiting, make))

    handled = [*reversed(p.answered), *p.stored.handled_requests][:HANDLED_REQUESTS_KEPT]
    # The evidence of a verdict about the rollout this pass began with is kept, also when that
    # verdict ended the rollout (rolled back, promoted); not when another rollout replaced it.
    given = p.inputs.analysis
    evidence = (
        given.status
        if given is not None
        and given.judged == comparison(md.spec, md.status)
        and candidate in (None, given.judged.candidate)
        else None
    )
    final = replace(
        state,
        phase=phase,
        message=message,
        canary_weight=candidate_weight,
        scale_down=tuple(s for s in state.scale_down if s.at > p.now),
        last_analysis=evidence or state.last_analysis,
    )
    status = final.status(observed_generation=gen, conditions=conditions, traffic=traffic, handled_requests=handled)
    return Plan(tuple(found), status, tuple(p.events), comparison(md.spec, status))


def gitops_conditions(
    p: Pass,
    phase: Phase,
    message: str,
    progressing: Condition,
    short: bool,
    waiting: bool,
    make: Callable[[str, bool | None, str, str], Condition],
) -> list[Condition]:
    """Reconciling and Stalled, as kstatus reads them (sigs.k8s.io/cli-utils pkg/kstatus,
    generic.go: Reconciling True is InProgress, Stalled True is Failed, both checked before
    Ready), each written False when all is well. ``progressing``: this pass's Progressing
    condition; ``short``: the stable revision has fewer ready pods than it asks for;
    ``waiting``: a new spec waits for the SafetyPolicy before its rollout starts.

    Reconciling is True while the spec is not in effect yet and the operator is on its way:
    a rollout under way, with the Progressing condition's reason (RolloutInProgress, or
    Paused, AwaitingPromotion, SafetyPolicyNotReady: a rollout that waits is not done either,
    so a Flux wait does not pass it half-way), a rollout waiting to start, or the stable revision
    short of ready pods (PodsNotReady). Stalled is True where it will not get there without a
    new spec or a person: rolled back (RolledBack, whatever rolled it back), no ready pod past
    progressDeadlineSeconds (ProgressDeadlineExceeded), an AlertRule's fallback serving instead
    of stable (Fallback). Both carry status.message."""
    stalled = (
        reasons.ROLLED_BACK
        if phase == "RolledBack"
        else reasons.PROGRESS_DEADLINE_EXCEEDED
        if phase == "Failed"
        else reasons.FALLBACK
        if phase == "Degraded" and p.state.fallback_revision is not None
        else None
    )
    if stalled is None and (p.state.candidate_revision is not None or waiting):
        reconciling = make(RECONCILING, True, progressing.reason, message)
    elif stalled is None and short:
        reconciling = make(RECONCILING, True, reasons.PODS_NOT_READY, message)
    else:
        reconciling = make(RECONCILING, False, stalled or reasons.RECONCILED, message)
    return [reconciling, make(STALLED, stalled is not None, stalled or reasons.NOT_STALLED, message if stalled else "")]


def invalid(old: Mapping[str, Any], generation: int | None, message: str, now: datetime) -> dict[str, Any]:
    """The status (wire form) of a ModelDeployment whose spec only the operator can find wrong,
    ``message`` saying where: phase Failed; Ready False, Reconciling False and Stalled True,
    each with reason InvalidSpec (kstatus: Failed, where Ready False alone reads as InProgress
    until a Flux wait times out). The rest of ``old`` (revisions, traffic) is kept: what ran
    before still runs."""
    conditions = [
        Condition(
            type=type_,
            status=status,
            reason=reasons.INVALID_SPEC,
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        ).wire()
        for type_, status in ((READY, "False"), (RECONCILING, "False"), (STALLED, "True"))
    ]
    return {**old, "phase": "Failed", "message": message, "conditions": conditions, "observedGeneration": generation}


def rollout_message(p: Pass, weight: int, human: str | None, problems: Mapping[str, PodProblem]) -> str:
    """status.message during a rollout: where it stands, why it waits, what its pods lack."""
    state = p.state
    head = p.strategy.describe(p, weight)
    analysis = p.analysis
    if state.paused:
        head += f" (paused: {state.pause_reason or 'on-call'})"
    elif p.safety_hold is not None:
        head += f" (held: the SafetyPolicy is not ready: {p.safety_hold})"
    elif human:
        head += f" ({human})"
    elif analysis is not None:
        head += f"; analysis: {analysis.verdict}" + (f" ({analysis.reason})" if analysis.reason else "")
    for revision, role in (
        (state.candidate_revision, "candidate"),
        ((state.stable_revision or "") + BASELINE_SUFFIX, "baseline"),
    ):
        problem = problems.get(revision or "")
        if problem is not None:
            head += f"; {role} pods: {problem.describe()}"
    return head


def scaling_conditions(p: Pass, make: Callable[[str, bool | None, str, str], Condition]) -> list[Condition]:
    """ScalingActive and ScalingLimited, as an HPA writes them, when runtime.autoscaling is set;
    an Event when the autoscaler changed the count."""
    spec = p.spec.runtime.autoscaling
    if spec is None:
        return []
    scaled, external = p.state.autoscaling, p.state.scaled_externally
    if scaled is None:
        by = scaled_by(p.md)
        owner = f"{by} ({ANNOTATION_SCALED_BY})" if by is not None else f"an HPA on {', '.join(external)}"
        text = f"the replicas are owned by {owner}; the operator leaves them alone"
        return [make(SCALING_ACTIVE, False, reasons.SCALED_EXTERNALLY, text)]
    before = p.stored.autoscaling
    if scaled.desired_replicas != scaled.current_replicas and (before is None or before != scaled):
        p.event(reasons.SCALED, f"{scaled.current_replicas} -> {scaled.desired_replicas} pods: {scaled.message}")
    if not targets(spec):
        active = make(SCALING_ACTIVE, False, reasons.NO_TARGET, "no target set: the model runs minReplicas pods")
    elif scaled.limited_by == "MetricMissing":
        active = make(SCALING_ACTIVE, False, reasons.METRIC_MISSING, scaled.message)
    else:
        active = make(SCALING_ACTIVE, True, reasons.VALID_METRIC, scaled.message)
    floor = canary_floor(p)
    if floor is not None and spec.max_replicas < floor[1]:
        weight, needed = floor
        replicas = p.replicas
        text = (
            f"a {weight}% canary step needs {needed} pods to be {weight}% of the pods (traffic provider replicas); "
            f"maxReplicas is {spec.max_replicas}: it runs as 1 of {replicas} pods"
        )
        limited = make(SCALING_LIMITED, True, reasons.MAX_BELOW_CANARY_STEP, text)
    elif scaled.limited_by not in ("", "Tolerance", "MetricMissing"):
        limited = make(SCALING_LIMITED, True, scaled.limited_by, scaled.message)
    else:
        limited = make(SCALING_LIMITED, False, "DesiredWithinRange", scaled.message)
    return [active, limited]


def canary_floor(p: Pass) -> tuple[int, int] | None:
    """With traffic provider replicas, where a canary's weight is its share of the pods: the
    smallest step weight and the pods needed for that share to be at most that weight (a
    count below gives its one pod a larger share). None for any other strategy or provider."""
    canary = p.spec.strategy.canary
    weights = [s.set_weight for s in canary.steps if s.set_weight] if canary is not None else []
    if not p.provider.pooled or not weights:
        return None
    least = min(weights)
    return least, math.ceil(100 / least)
