"""The rollout state machine: pure, no I/O.

``reconcile(inputs) -> Plan``: given the parsed ModelDeployment, what was observed of its pods,
the analysis verdict, the on-call requests found in its annotations, and the time, return the
workloads that should exist (one per revision, with replicas and role), the new status (whose
traffic table the gateway routes by) and the events to post. The kopf handler applies the plan;
everything that decides lives here, so it is tested without a cluster.

The persisted state is the status itself: stable and candidate revisions, the step and when it
began, the rejected revision, pending scale-downs. Given the same inputs twice, the second plan
equals the first (the handler may crash and re-run at any point).

Invariants (checked by property tests): live weights sum to 100; no live traffic goes to a
revision without ready pods; nothing is promoted without a promote verdict or a human request;
a rollback lands on a revision that was stable.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from cutover.api.v1alpha1 import REQUEST_ANNOTATIONS, Condition
from cutover.api.v1alpha1.base import seconds
from cutover.api.v1alpha1.modeldeployment import (
    AnalysisStatus,
    HandledRequest,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    PostPromotionStatus,
    RevisionRecord,
    Role,
    ScaleDown,
    TrafficEntry,
)

if TYPE_CHECKING:
    from ..pods import PodProblem

Verdict = Literal["promote", "continue", "rollback", "inconclusive", "unavailable"]
CANARY_SCALE_DOWN_SECONDS = 30
HANDLED_REQUESTS_KEPT = 20
BASELINE_SUFFIX = "-baseline"
NO_ROLLOUT: dict[str, Any] = {
    "candidate_revision": None,
    "current_step_index": None,
    "step_started_at": None,
    "rollout_started_at": None,
    "canary_weight": 0,
    "candidate_ready_replicas": 0,
    "surge_free": False,
    "promoting": False,
    "paused": False,
    "pause_reason": "",
}
"""Status fields of a rollout, as they are when none is in progress."""


def revision_of(model: dict[str, Any], runtime: dict[str, Any]) -> str:
    """Stable hash of what runs: the model and runtime sections in wire form."""
    canonical = json.dumps({"model": model, "runtime": runtime}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Source:
    """What a revision runs: model and runtime in wire form (from the spec or from history)."""

    model: dict[str, Any]
    runtime: dict[str, Any]


@dataclass(frozen=True)
class Workload:
    """A revision's pods as they should be: the builders turn it into a Deployment and Service."""

    revision: str
    role: Role
    replicas: int
    source: Source


@dataclass(frozen=True)
class Capacity:
    """Free accelerator capacity for the desired pod shape (from the GPU preflight)."""

    resource: str
    per_pod: int
    free_pods: int
    """How many more pods of this shape the cluster can place right now."""
    detail: str = ""


@dataclass(frozen=True)
class AnalysisPlan:
    """Which comparison the analysis engine should be running: the candidate against the
    baseline (stable, or fresh baseline pods of it), for the rollout that began at ``started_at``."""

    candidate: str
    baseline: str
    started_at: datetime


@dataclass(frozen=True)
class AnalysisInput:
    """The analysis engine's latest result, naming the comparison it judged.

    The state machine acts on it only while ``judged`` is the comparison of the rollout in
    progress: a verdict about an earlier candidate (the spec moved on in the same pass, or while
    the operator was down), about another baseline (on-call switched stable) or about an earlier
    attempt at the same candidate (rolled back, then retried) is ignored."""

    judged: AnalysisPlan
    verdict: Verdict
    reason: str = ""
    consecutive_errors: int = 0
    status: AnalysisStatus | None = None
    agreement: float | None = None
    """Shadow only: fraction of mirrored requests on which candidate and stable agreed."""


@dataclass(frozen=True)
class WatchInput:
    """The post-promotion watch's latest finding about ``revision``; the state machine acts on
    it only while that revision is the one status.postPromotion watches."""

    revision: str
    alarm: bool
    reason: str


@dataclass(frozen=True)
class Request:
    """An on-call request read from an annotation."""

    action: str
    id: str
    by: str = ""


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Inputs:
    md: ModelDeployment
    ready: dict[str, int]
    """Ready pods per revision (the baseline's under its -baseline id)."""
    now: datetime
    analysis: AnalysisInput | None = None
    requests: tuple[Request, ...] = ()
    capacity: Capacity | None = None
    pod_problems: dict[str, PodProblem] = field(default_factory=dict)
    """Why pods are not ready, per revision (the baseline's under its -baseline id)."""
    watch: WatchInput | None = None


@dataclass(frozen=True)
class Plan:
    workloads: tuple[Workload, ...]
    status: ModelDeploymentStatus
    events: tuple[Event, ...] = ()
    analysis: AnalysisPlan | None = None


def comparison(spec: ModelDeploymentSpec, status: ModelDeploymentStatus | None) -> AnalysisPlan | None:
    """The comparison the analysis runs for the rollout in ``status``: the candidate against the
    stable revision, or against fresh baseline pods of it when the canary asks for them."""
    if status is None or status.candidate_revision is None or status.stable_revision is None:
        return None
    if status.rollout_started_at is None:
        return None
    canary = spec.strategy.canary
    baseline = status.stable_revision + (BASELINE_SUFFIX if canary is not None and canary.baseline else "")
    return AnalysisPlan(status.candidate_revision, baseline, status.rollout_started_at)


def requests_in(annotations: dict[str, str]) -> list[Request]:
    """Every on-call request present in the annotations (handled or not: the state machine
    tells the new ones from the handled ones by ``status.lastHandledRequests``)."""
    return [Request(action, value) for action, key in REQUEST_ANNOTATIONS.items() if (value := annotations.get(key))]


def rollback_target(request_id: str) -> str:
    """The revision a rollbackTo request names: its value is ``REVISION`` or ``REVISION@ID``
    (the form `kubectl cutover rollback --to` writes, so that asking for the same revision again
    is a new request)."""
    return request_id.split("@", 1)[0]


def _is_new(request: Request, status: ModelDeploymentStatus) -> bool:
    last = status.last_handled_requests.get(request.action)
    if last is not None:
        return request.id != last
    # Written by a version that kept only the recent history: anything in it is done.
    return not any(h.action == request.action and h.id == request.id for h in status.handled_requests)


# ----------------------------------------------------------------------------- the machine


@dataclass
class _State:
    """Mutable working copy of the status while one reconcile is computed."""

    inputs: Inputs
    status: ModelDeploymentStatus
    source: Source
    """What the spec asks to run (computed once per reconcile)."""
    events: list[Event] = field(default_factory=list)
    handled: list[HandledRequest] = field(default_factory=list)

    @property
    def now(self) -> datetime:
        return self.inputs.now

    @property
    def analysis(self) -> AnalysisInput | None:
        """The analysis input if it judged the comparison of the rollout now in progress, else
        None (read at each use: handling a request or starting a rollout changes the answer)."""
        given = self.inputs.analysis
        if given is None or given.judged != comparison(self.inputs.md.spec, self.status):
            return None
        return given

    def set(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event("Warning" if warning else "Normal", reason, message))

    def answer(self, request: Request, result: str, ok: bool = True) -> None:
        self.handled.append(
            HandledRequest(action=request.action, id=request.id, by=request.by, at=self.now, result=result)
        )
        self.event(f"Request{request.action[0].upper()}{request.action[1:]}", f"{request.id}: {result}", warning=not ok)


def _source_of_spec(md: ModelDeployment) -> Source:
    wire = md.spec.wire()
    return Source(model=wire["model"], runtime=wire["runtime"])


def _source_of(status: ModelDeploymentStatus, revision: str) -> Source | None:
    for record in status.history:
        if record.revision == revision:
            return Source(model=record.spec.get("model", {}), runtime=record.spec.get("runtime", {}))
    return None


def _replicas(md: ModelDeployment) -> int:
    runtime = md.spec.runtime
    return runtime.autoscaling.min_replicas if runtime.autoscaling else runtime.replicas


def _record(
    status: ModelDeploymentStatus, revision: str, source: Source, version: str, now: datetime, limit: int
) -> list[RevisionRecord]:
    """History with ``revision`` as the newest stable, bounded by revisionHistoryLimit (the
    current stable always stays, so a limit of 0 still knows what runs)."""
    kept = [r for r in status.history if r.revision != revision]
    record = RevisionRecord(
        revision=revision,
        model_version=version,
        promoted_at=now,
        spec={"model": source.model, "runtime": source.runtime},
    )
    return [record, *kept][: max(1, limit + 1)]


def reconcile(inputs: Inputs) -> Plan:
    md = inputs.md
    source = _source_of_spec(md)
    desired = revision_of(source.model, source.runtime)
    st = _State(inputs, md.status or ModelDeploymentStatus(), source)

    _handle_requests(st, desired)
    _watch(st, desired)

    status = st.status
    if status.stable_revision is None:
        _initial(st, desired)
    elif desired == status.stable_revision:
        if status.candidate_revision is not None:
            _end_rollout(
                st,
                f"spec returned to the stable revision {desired}; rollout of {status.candidate_revision} dropped",
                reason="RolloutSuperseded",
            )
        if status.rejected_revision is not None:
            st.set(rejected_revision=None)
    elif desired == status.rejected_revision and status.candidate_revision is None:
        pass  # rolled back: wait for a spec change or a retry
    else:
        if status.candidate_revision != desired:
            _start_rollout(st, desired)
        _progress(st, desired)

    return _finish(st, desired)


def _watch(st: _State, desired: str) -> None:
    """The post-promotion watch: end it when its time is up or stable changed for another
    reason; when it finds a rise, roll back to the revision the watched one replaced (ending any
    rollout started since), or only warn with action none."""
    watched = st.status.post_promotion
    if watched is None or watched.state != "Watching":
        return
    spec = st.inputs.md.spec.analysis.post_promotion
    finding = st.inputs.watch if st.inputs.watch and st.inputs.watch.revision == watched.revision else None
    if spec is None or watched.revision != st.status.stable_revision:
        why = "analysis.postPromotion was removed" if spec is None else f"stable is now {st.status.stable_revision}"
        st.set(post_promotion=watched.model_copy(update={"state": "Ended", "reason": why}))
    elif finding is not None and finding.alarm:
        st.set(post_promotion=watched.model_copy(update={"state": "Regressed", "reason": finding.reason}))
        if spec.action == "rollback" and _source_of(st.status, watched.previous) is not None:
            if st.status.candidate_revision is not None:
                _rollback(st, "PostPromotionRegression", f"stable {watched.revision} regressed after promotion")
            _switch_stable(st, watched.previous, desired, finding.reason, "PostPromotionRegression")
        else:
            gone = f"; cannot roll back: {watched.previous} is no longer in the revision history"
            st.event(
                "PostPromotionRegression", finding.reason + (gone if spec.action == "rollback" else ""), warning=True
            )
    elif st.now >= watched.until:
        reason = f"no rise found between {watched.promoted_at.isoformat()} and {watched.until.isoformat()}"
        st.set(post_promotion=watched.model_copy(update={"state": "Passed", "reason": reason}))
        st.event("PostPromotionPassed", f"revision {watched.revision}: {reason}")
    elif finding is not None and finding.reason != watched.reason:
        st.set(post_promotion=watched.model_copy(update={"reason": finding.reason}))


def _initial(st: _State, desired: str) -> None:
    """First revision: it is stable at once (there is nothing to compare it with)."""
    md = st.inputs.md
    st.set(
        stable_revision=desired,
        history=_record(st.status, desired, st.source, md.spec.model.version, st.now, md.spec.revision_history_limit),
    )
    st.event("Deployed", f"revision {desired} (model {md.spec.model.name} {md.spec.model.version}) is the first stable")


def _start_rollout(st: _State, desired: str) -> None:
    md = st.inputs.md
    previous = st.status.candidate_revision
    if previous is not None:
        st.event("RolloutSuperseded", f"candidate {previous} replaced by {desired} before it finished")
    st.set(
        candidate_revision=desired,
        current_step_index=0,
        step_started_at=st.now,
        rollout_started_at=st.now,
        last_progress_at=st.now,
        canary_weight=0,
        last_analysis=None,
        rejected_revision=None,
    )
    st.event(
        "RolloutStarted",
        f"{md.spec.strategy.type} rollout of revision {desired} (model version "
        f"{md.spec.model.version}) against stable {st.status.stable_revision}",
    )


def _end_rollout(st: _State, message: str, reason: str) -> None:
    st.set(**NO_ROLLOUT)
    st.event(reason, message)


def _rollback(st: _State, reason: str, message: str) -> None:
    """Send everything back to stable now; the candidate is not retried until the spec changes."""
    candidate = st.status.candidate_revision
    st.set(**NO_ROLLOUT, rejected_revision=candidate, phase="RolledBack", message=f"rolled back {candidate}: {message}")
    st.events.append(
        Event("Warning", reason, f"rolled back {candidate} to stable {st.status.stable_revision}: {message}")
    )


def _try_promote(st: _State, how: str) -> None:
    """Promote once the candidate runs at full size; until then, scale it up. The decision is
    kept (status.promoting): the rollout has passed, whatever later verdicts short of a
    rollback say, and it counts as progress once."""
    candidate = st.status.candidate_revision
    if candidate is not None and st.inputs.ready.get(candidate, 0) >= _replicas(st.inputs.md):
        _promote(st, how)
    elif not st.status.promoting:
        st.set(promoting=True, last_progress_at=st.now)
        st.event("ScalingUp", f"{candidate} passed ({how}); bringing it to full size before it takes all traffic")


def _promote(st: _State, how: str) -> None:
    """The candidate becomes stable; the old stable keeps its pods for the scale-down delay."""
    md = st.inputs.md
    candidate, old = st.status.candidate_revision, st.status.stable_revision
    assert candidate is not None and old is not None
    delay = (
        md.spec.strategy.blue_green.scale_down_delay_seconds
        if md.spec.strategy.blue_green
        else CANARY_SCALE_DOWN_SECONDS
    )
    scale_down = [s for s in st.status.scale_down if s.revision not in (candidate, old)]
    scale_down.append(ScaleDown(revision=old, at=st.now + timedelta(seconds=delay)))
    watch = md.spec.analysis.post_promotion
    judged = comparison(md.spec, st.status)
    # A watched revision's predecessor stays in history whatever the limit: it is where a rollback goes.
    limit = max(md.spec.revision_history_limit, 1 if watch is not None else 0)
    st.set(
        **NO_ROLLOUT,
        stable_revision=candidate,
        scale_down=scale_down,
        history=_record(st.status, candidate, st.source, md.spec.model.version, st.now, limit),
        post_promotion=PostPromotionStatus(
            revision=candidate,
            previous=old,
            baseline=judged.baseline if judged else old,
            rollout_started_at=judged.started_at if judged else st.now,
            promoted_at=st.now,
            until=st.now + timedelta(seconds=seconds(watch.duration)),
            reason="watching for a rise of the error and slow-request rates since the rollout",
        )
        if watch is not None
        else None,
    )
    st.event("Promoted", f"revision {candidate} (model version {md.spec.model.version}) promoted: {how}")


# ----------------------------------------------------------------------------- on-call


def _handle_requests(st: _State, desired: str) -> None:
    """Handle each request in the annotations at most once, forever: its id is remembered as the
    last handled one for its action, whatever it led to (ignored requests included)."""
    new = [r for r in st.inputs.requests if _is_new(r, st.status)]
    last = {**st.status.last_handled_requests, **{r.action: r.id for r in st.inputs.requests}}
    st.set(last_handled_requests=last)
    for request in new:
        status = st.status
        rolling = status.candidate_revision is not None
        if request.action == "pause":
            if rolling:
                st.set(paused=True, pause_reason=f"on-call request {request.id}")
                st.answer(request, "rollout paused")
            else:
                st.answer(request, "ignored: nothing is rolling out", ok=False)
        elif request.action == "resume":
            if status.paused:
                st.set(paused=False, pause_reason="", last_progress_at=st.now)
                st.answer(request, "rollout resumed")
            else:
                st.answer(request, "ignored: the rollout is not paused", ok=False)
        elif request.action == "promote":
            if not rolling:
                st.answer(request, "ignored: nothing is rolling out", ok=False)
            elif request.id.startswith("full") or _at_last_step(st):
                if st.inputs.ready.get(status.candidate_revision or "", 0):
                    _promote(st, f"on-call request {request.id}")
                    st.answer(request, "candidate promoted")
                else:
                    st.answer(
                        request, "ignored: the candidate has no ready pod to take traffic; ask again later", ok=False
                    )
            else:
                st.set(
                    current_step_index=(status.current_step_index or 0) + 1,
                    step_started_at=st.now,
                    last_progress_at=st.now,
                    paused=False,
                    pause_reason="",
                )
                st.answer(request, f"advanced to step {st.status.current_step_index}")
        elif request.action == "abort":
            if rolling:
                _rollback(st, "Aborted", f"aborted by on-call request {request.id}")
                st.answer(request, "rollout aborted")
            else:
                st.answer(request, "ignored: nothing is rolling out", ok=False)
        elif request.action == "rollback":
            if rolling:
                _rollback(st, "RolledBackByRequest", f"on-call request {request.id}")
                st.answer(request, f"rolled back to {st.status.stable_revision}")
            else:
                previous = next((r.revision for r in status.history[1:]), None)
                if previous is None:
                    st.answer(request, "ignored: no earlier stable revision in history", ok=False)
                else:
                    _switch_stable(st, previous, desired, f"on-call request {request.id}", "RolledBackByRequest")
                    st.answer(request, f"rolled back to {previous}")
        elif request.action == "rollbackTo":
            target = rollback_target(request.id)
            if target == status.stable_revision and not rolling:
                st.answer(request, f"ignored: {target} is already stable", ok=False)
            elif _source_of(status, target) is None:
                known = ", ".join(r.revision for r in status.history) or "none"
                st.answer(request, f"ignored: {target} is not in the revision history (known: {known})", ok=False)
            else:
                if rolling:
                    _rollback(st, "RolledBackByRequest", f"on-call request to roll back to {target}")
                if target != st.status.stable_revision:
                    _switch_stable(st, target, desired, f"on-call request {request.id}", "RolledBackByRequest")
                st.answer(request, f"rolled back to {target}")
        elif request.action == "retry":
            if status.rejected_revision is not None and status.rejected_revision == desired:
                st.set(rejected_revision=None)
                st.answer(request, f"retrying {desired}")
            else:
                st.answer(request, "ignored: no rolled-back revision to retry", ok=False)


def _switch_stable(st: _State, target: str, desired: str, cause: str, reason: str) -> None:
    """Make an older stable revision stable again (its spec from history); the revision that
    was stable, and whatever the spec asks for, are not rolled out again without a retry."""
    old = st.status.stable_revision
    history = st.status.history
    target_record = next(r for r in history if r.revision == target)
    reordered = [
        target_record.model_copy(update={"promoted_at": st.now}),
        *[r for r in history if r.revision != target],
    ]
    scale_down = [s for s in st.status.scale_down if s.revision not in (target, old)]
    if old is not None:
        scale_down.append(ScaleDown(revision=old, at=st.now + timedelta(seconds=CANARY_SCALE_DOWN_SECONDS)))
    st.set(
        stable_revision=target,
        history=reordered,
        scale_down=scale_down,
        phase="RolledBack",
        rejected_revision=desired if desired != target else None,
        message=f"rolled back from {old} to {target}: {cause}",
    )
    st.events.append(Event("Warning", reason, f"stable switched from {old} to {target}: {cause}"))


# ----------------------------------------------------------------------------- progress


def _steps(st: _State) -> list[Any]:
    canary = st.inputs.md.spec.strategy.canary
    return list(canary.steps) if canary else []


def _at_last_step(st: _State) -> bool:
    strategy = st.inputs.md.spec.strategy
    if strategy.type != "canary":
        return True
    return (st.status.current_step_index or 0) >= len(_steps(st)) - 1


def _target_weight(st: _State) -> int:
    """The candidate's configured share at the current canary step."""
    weight = 0
    for step in _steps(st)[: (st.status.current_step_index or 0) + 1]:
        if step.set_weight is not None:
            weight = step.set_weight
    return weight


def _live_weight(st: _State, candidate_ready: int) -> int:
    """The largest step weight so far whose candidate pods are all ready: a new weight goes live
    only once the candidate can carry it."""
    weight = 0
    for step in _steps(st)[: (st.status.current_step_index or 0) + 1]:
        if step.set_weight is not None and candidate_ready >= _candidate_replicas(st, step.set_weight):
            weight = max(weight, step.set_weight)
    return weight


def _elapsed(since: datetime | None, now: datetime) -> float:
    return (now - since).total_seconds() if since else 0.0


def _allowance(st: _State) -> float:
    """Seconds the current wait may take by the spec's own configuration, beyond
    progressDeadlineSeconds: a timed pause, an analysis step's maxDuration, the least analysis
    time, the shadow or A/B duration, blue/green's autoPromotionSeconds."""
    spec = st.inputs.md.spec
    strategy = spec.strategy
    least = seconds(spec.analysis.min_duration)
    if st.status.promoting:
        return 0.0  # passed: only the candidate's pods are awaited
    if strategy.canary is not None:
        steps, index = _steps(st), st.status.current_step_index or 0
        if index >= len(steps):
            return least  # the final verdict
        step = steps[index]
        if step.pause is not None:
            return seconds(step.pause.duration) if step.pause.duration else 0.0
        if step.analysis is not None:
            return max(least, seconds(step.analysis.max_duration) if step.analysis.max_duration else 0.0)
        return 0.0
    if strategy.blue_green is not None:
        return max(least, float(strategy.blue_green.auto_promotion_seconds or 0))
    if strategy.shadow is not None:
        return max(least, seconds(strategy.shadow.duration))
    assert strategy.ab_test is not None
    return seconds(strategy.ab_test.duration)


def _awaiting_human(st: _State, candidate_ready: int) -> str | None:
    """What on-call must do when the spec itself makes the rollout wait for a person (an
    indefinite pause step, or a ready blue/green preview without auto-promotion); else None."""
    md = st.inputs.md
    strategy = md.spec.strategy
    how = f"kubectl cutover promote {md.metadata.name} (or annotate cutover.dev/promote)"
    if strategy.canary is not None:
        steps, index = _steps(st), st.status.current_step_index or 0
        if index < len(steps) and steps[index].pause is not None and steps[index].pause.duration is None:
            return f"canary step {index} waits for on-call: {how}"
    elif (
        strategy.blue_green is not None
        and not strategy.blue_green.auto_promotion_enabled
        and candidate_ready >= _candidate_wanted(st)
    ):
        return f"preview ready and auto-promotion is off: {how}"
    return None


def _deadline_passed(st: _State, candidate_ready: int, analysis: AnalysisInput | None, limit: float) -> None:
    """The current wait outlived progressDeadlineSeconds plus its configured length. Pods that
    never became ready, or a verdict that never came, roll back; metrics that could not be
    read pause the rollout for a human instead (an outage is not the candidate's failure)."""
    candidate = st.status.candidate_revision
    wanted = _candidate_wanted(st)
    if candidate_ready < wanted:
        problem = st.inputs.pod_problems.get(candidate or "")
        why = f": {problem.describe()}" if problem else ""
        if st.inputs.capacity is not None and st.inputs.capacity.free_pods < wanted and not candidate_ready:
            why = why or f": {st.inputs.capacity.free_pods} more pods of this GPU shape fit, {wanted} needed"
        _rollback(
            st, "ProgressDeadlineExceeded", f"{candidate_ready}/{wanted} candidate pods ready after {limit:.0f}s{why}"
        )
    elif analysis is not None and analysis.verdict == "unavailable":
        reason = f"metrics unavailable for over {limit:.0f}s ({analysis.reason})"
        st.set(paused=True, pause_reason=reason)
        st.event(
            "AnalysisUnavailable",
            f"rollout of {candidate} paused: {reason}; resume once metrics are back, or promote or abort",
            warning=True,
        )
    else:
        last = f"{analysis.verdict} ({analysis.reason})" if analysis else "none"
        _rollback(st, "ProgressDeadlineExceeded", f"no decision within {limit:.0f}s; last verdict: {last}")


def _progress(st: _State, desired: str) -> None:
    """Move the rollout on, hold it, promote it or roll it back."""
    md = st.inputs.md
    spec = md.spec
    analysis = st.analysis
    if st.status.candidate_revision is None:  # an on-call request ended it in this reconcile
        return
    if analysis is not None and analysis.verdict == "rollback":
        _rollback(st, "AnalysisFailed", analysis.reason)
        return
    candidate_ready = st.inputs.ready.get(desired, 0)
    if candidate_ready > st.status.candidate_ready_replicas:
        # More candidate pods ready than ever in this rollout: progress, as for a Deployment (a
        # pod that keeps crashing and coming back is not).
        st.set(last_progress_at=st.now, candidate_ready_replicas=candidate_ready)
    if st.status.paused:
        return  # frozen by on-call (or by the operator, below) until a human acts
    if st.status.promoting:
        _try_promote(st, "the candidate passed and runs at full size")
    elif analysis is None or analysis.verdict != "unavailable":  # unavailable: the weights stay frozen
        _advance(st, desired, candidate_ready, analysis)
    # The deadline is read after the pass moved what it could: a verdict or a timed pause that
    # came due while the operator was down is progress, not a reason to roll back.
    if st.status.candidate_revision is None or st.status.paused or _awaiting_human(st, candidate_ready):
        return
    limit = spec.progress_deadline_seconds + _allowance(st)
    if _elapsed(st.status.last_progress_at, st.now) > limit:
        _deadline_passed(st, candidate_ready, analysis, limit)


def _advance(st: _State, desired: str, candidate_ready: int, analysis: AnalysisInput | None) -> None:
    """The strategy's own moves: steps, promotion, strategy-specific rollbacks."""
    md = st.inputs.md
    strategy = md.spec.strategy
    verdict = analysis.verdict if analysis else None
    if strategy.type == "canary":
        _canary(st, desired, candidate_ready, verdict)
    elif strategy.type == "blueGreen":
        bg = strategy.blue_green
        assert bg is not None
        wanted = bg.preview_replica_count or _replicas(md)
        waited = _elapsed(st.status.rollout_started_at, st.now) >= (bg.auto_promotion_seconds or 0)
        if candidate_ready >= wanted and verdict == "promote" and bg.auto_promotion_enabled and waited:
            _try_promote(st, "preview analysis passed")
    elif strategy.type == "shadow":
        shadow = strategy.shadow
        assert shadow is not None
        agreement = analysis.agreement if analysis else None
        long_enough = _elapsed(st.status.rollout_started_at, st.now) >= seconds(shadow.duration)
        if verdict == "promote" and long_enough and agreement is not None:
            if agreement >= shadow.min_agreement:
                _try_promote(st, f"shadow analysis passed with {agreement:.1%} agreement")
            elif candidate_ready:
                _rollback(st, "ShadowDisagreement", f"agreement {agreement:.1%} below {shadow.min_agreement:.0%}")
    elif strategy.type == "abTest":
        ab = strategy.ab_test
        assert ab is not None
        if verdict == "promote":
            _try_promote(st, f"A/B test: the candidate won on {ab.metric}")
        elif _elapsed(st.status.rollout_started_at, st.now) >= seconds(ab.duration):
            _rollback(st, "ABTestEnded", f"no winner on {ab.metric} within {ab.duration}; stable kept")


def _canary(st: _State, desired: str, candidate_ready: int, verdict: Verdict | None) -> None:
    steps = _steps(st)
    spec = st.inputs.md.spec
    for _ in range(len(steps) + 1):  # advance through steps that are already satisfied
        index = st.status.current_step_index or 0
        if index >= len(steps):
            if verdict == "promote":
                _try_promote(st, "every canary step passed")
            return
        step = steps[index]
        in_step = _elapsed(st.status.step_started_at, st.now)
        if step.set_weight is not None:
            if _pooled(st.inputs.md):
                needed = _pool_candidate_replicas(st)
            else:
                needed = _candidate_replicas(st, step.set_weight) if step.set_weight else 0
            done = candidate_ready >= needed
        elif step.pause is not None:
            done = step.pause.duration is not None and in_step >= seconds(step.pause.duration)
        else:
            assert step.analysis is not None
            done = verdict == "promote" and in_step >= seconds(spec.analysis.min_duration)
            limit = step.analysis.max_duration
            if not done and limit is not None and in_step >= seconds(limit):
                _rollback(st, "AnalysisTimeout", f"step {index} stayed without a verdict for {limit}")
                return
        if not done:
            return
        st.set(current_step_index=index + 1, step_started_at=st.now, last_progress_at=st.now)
        st.event("StepCompleted", f"canary step {index} done; now at step {index + 1} of {len(steps)}")


def _candidate_wanted(st: _State) -> int:
    """Candidate pods the current state asks for."""
    md = st.inputs.md
    replicas = _replicas(md)
    strategy = md.spec.strategy
    if st.status.promoting:
        return replicas
    if _pooled(md):
        return _pool_candidate_replicas(st)
    if strategy.type == "canary":
        return _candidate_replicas(st, max(_target_weight(st), 1))
    if strategy.type == "blueGreen":
        assert strategy.blue_green is not None
        return strategy.blue_green.preview_replica_count or replicas
    if strategy.type == "shadow":
        assert strategy.shadow is not None
        return max(1, math.ceil(replicas * strategy.shadow.mirror_percent / 100))
    assert strategy.ab_test is not None
    return max(1, math.ceil(replicas * strategy.ab_test.candidate_weight / 100))


def _candidate_replicas(st: _State, weight: int) -> int:
    return max(1, math.ceil(_replicas(st.inputs.md) * weight / 100))


def _pooled(md: ModelDeployment) -> bool:
    """A canary on provider replicas: one Service selects every pod of the model, so each
    revision's share of live traffic is its share of the ready pods."""
    return md.spec.traffic.provider == "replicas" and md.spec.strategy.type == "canary"


def _pool_candidate_replicas(st: _State) -> int:
    """Candidate pods in the live pool: the step's weight as a replica count (at least one pod
    once the weight is above 0), or every pod once the candidate passed and is scaled up."""
    replicas = _replicas(st.inputs.md)
    if st.status.promoting:
        return replicas
    weight = _target_weight(st)
    return max(1, round(replicas * weight / 100)) if weight else 0


def _pool_traffic(rows: dict[str, TrafficEntry], ready: dict[str, int], stable: str) -> list[TrafficEntry]:
    """Weights as the shared Service spreads connections: in proportion to ready pods, rounded
    by largest remainder so they sum to 100 (stable keeps 100 when no pod is ready)."""
    counts = {revision: ready.get(revision, 0) for revision in rows}
    total = sum(counts.values())
    if total == 0:
        counts, total = {stable: 1}, 1
    exact = {revision: 100 * n / total for revision, n in counts.items()}
    weights = {revision: math.floor(x) for revision, x in exact.items()}
    for revision in sorted(exact, key=lambda r: weights[r] - exact[r])[: 100 - sum(weights.values())]:
        weights[revision] += 1
    return [row.model_copy(update={"weight": weights.get(revision, 0)}) for revision, row in rows.items()]


# ----------------------------------------------------------------------------- result


def _workloads(st: _State, desired: str) -> tuple[list[Workload], bool]:
    """Workloads for the current state, and whether surge-free (swap) mode is in force."""
    md, status = st.inputs.md, st.status
    replicas = _replicas(md)
    stable = status.stable_revision
    out: list[Workload] = []
    swap = False
    candidate = status.candidate_revision
    stable_replicas = replicas
    if candidate is not None:
        strategy = md.spec.strategy
        want = _candidate_wanted(st)
        capacity = st.inputs.capacity
        short = capacity is not None and capacity.free_pods < want
        # Once a rollout trades stable pods for candidate ones it keeps doing so: the GPUs the
        # stable pods freed would otherwise read as room to grow them back.
        swap = strategy.surge == "never" or (strategy.surge == "auto" and (short or status.surge_free))
        if _pooled(md):
            swap = True  # the replica ratio is the traffic split
            want = _pool_candidate_replicas(st)
        held = strategy.surge == "always" and short
        if not held:
            out.append(Workload(candidate, "preview" if strategy.type == "blueGreen" else "candidate", want, st.source))
        if swap and strategy.type in ("canary", "abTest", "shadow"):
            stable_replicas = max(0, replicas - want) if _pooled(md) else max(1, replicas - want)
        if not held and strategy.type == "canary" and strategy.canary and strategy.canary.baseline and stable:
            base_source = _source_of(status, stable)
            if base_source is not None:
                out.append(Workload(stable + BASELINE_SUFFIX, "baseline", want, base_source))
    if stable is not None:
        source = _source_of(status, stable) or st.source
        out.insert(0, Workload(stable, "stable", stable_replicas, source))
    for kept in status.scale_down:
        if _pooled(md) and stable is not None and st.inputs.ready.get(stable, 0) >= replicas:
            # Every pod of the model is in the live pool, so a kept revision takes traffic: it
            # stays only until the new stable can carry it all (no outage after a switch).
            break
        if kept.at > st.now and kept.revision not in {w.revision for w in out}:
            kept_source = _source_of(status, kept.revision)
            if kept_source is not None:
                out.append(Workload(kept.revision, "previous", replicas, kept_source))
    return out, swap


def _traffic(st: _State, workloads: list[Workload]) -> list[TrafficEntry]:
    """The traffic table: live weights sum to 100 and go only to revisions with ready pods
    (when none has any, stable keeps the table's 100 and nothing is served)."""
    md, status, ready = st.inputs.md, st.status, st.inputs.ready
    strategy = md.spec.strategy
    stable, candidate = status.stable_revision, status.candidate_revision
    prefix = md.metadata.name or "md"
    rows = {
        w.revision: TrafficEntry(revision=w.revision, role=w.role, weight=0, service=f"{prefix}-{w.revision}")
        for w in workloads
    }
    if stable is None or stable not in rows:
        return list(rows.values())
    if _pooled(md):
        return _pool_traffic(rows, ready, stable)
    share: dict[str, int] = {}
    mirror = 0
    if candidate is not None and candidate in rows and ready.get(candidate, 0) > 0:
        baseline = stable + BASELINE_SUFFIX
        if strategy.type == "canary":
            weight = _live_weight(st, ready.get(candidate, 0))
            if baseline in rows:  # compare like with like: the baseline takes the same share, or neither does
                if ready.get(baseline, 0) > 0:
                    share[baseline] = weight
                else:
                    weight = 0
            share[candidate] = weight
        elif strategy.type == "abTest":
            assert strategy.ab_test is not None
            share[candidate] = strategy.ab_test.candidate_weight
        elif strategy.type == "shadow":
            assert strategy.shadow is not None
            mirror = strategy.shadow.mirror_percent
        elif strategy.type == "blueGreen" and md.spec.traffic.provider != "replicas":
            # The preview takes no live traffic; a full mirror gives its analysis real requests.
            mirror = 100
    rest = 100 - sum(share.values())
    # Who can take stable's share when it has no ready pod, in order: revisions already live, a
    # kept previous stable, fresh baseline pods (stable's own model), then the candidate or
    # preview (an unproven revision answering beats every request failing).
    answering = [
        w.revision for role in ("previous", "baseline", "candidate", "preview") for w in workloads
        if w.role == role and ready.get(w.revision, 0) > 0
    ]  # fmt: skip
    if ready.get(stable, 0) > 0 or not (any(share.values()) or answering):
        share[stable] = rest
    else:  # stable has no ready pods: its share goes to the revisions that can answer
        live = [r for r, w in share.items() if w > 0] or answering[:1]
        share.setdefault(live[0], 0)
        for i, revision in enumerate(live):
            share[revision] += rest // len(live) + (1 if i < rest % len(live) else 0)
    for revision, weight in share.items():
        rows[revision] = rows[revision].model_copy(update={"weight": weight})
    if candidate is not None and candidate in rows and mirror:
        rows[candidate] = rows[candidate].model_copy(update={"mirror_percent": mirror})
    return list(rows.values())


def _condition(
    type_: str, ok: bool | None, reason: str, message: str, old: list[Condition], now: datetime, generation: int | None
) -> Condition:
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


def _finish(st: _State, desired: str) -> Plan:
    md = st.inputs.md
    workloads, swap = _workloads(st, desired)
    if swap and st.status.candidate_revision is not None and not st.status.surge_free:
        st.set(surge_free=True)
    traffic = _traffic(st, workloads)
    status = st.status
    ready = st.inputs.ready
    stable = status.stable_revision
    candidate = status.candidate_revision
    analysis = st.analysis
    replicas = _replicas(md)
    stable_ready = ready.get(stable, 0) if stable else 0
    candidate_weight = next((t.weight for t in traffic if t.revision == candidate), 0) if candidate else 0

    # Pod problems of the revisions that are short of ready pods: what status reports.
    asked = {w.revision: w.replicas for w in workloads}
    shown = {r: p for r, p in st.inputs.pod_problems.items() if r in asked and ready.get(r, 0) < asked[r]}
    stable_problem = shown.get(stable or "")
    old = status.conditions
    gen = md.metadata.generation
    before = st.inputs.md.status
    # Phase and message.
    phase: Phase
    human = _awaiting_human(st, ready.get(candidate, 0)) if candidate is not None else None
    if candidate is not None:
        phase = "Paused" if status.paused or human else "Progressing"
        message = _rollout_message(st, candidate_weight, human, shown)
    elif status.phase == "RolledBack" and (status.rejected_revision is not None or desired != stable):
        phase, message = "RolledBack", status.message
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
        unready = next((c for c in old if c.type == "Ready" and c.status == "False"), None)
        waited = _elapsed(unready.last_transition_time, st.now) if unready else 0.0
        if waited > md.spec.progress_deadline_seconds:
            lost = f"revision {stable} has had no ready pod for {waited:.0f}s"
            message = f"{message}; {lost}" if phase == "RolledBack" else lost
            phase = "Failed"
            if before is None or before.phase != "Failed":
                detail = f": {stable_problem.describe()}" if stable_problem else ""
                st.event("ProgressDeadlineExceeded", lost + detail, warning=True)
    if stable_problem is not None and candidate is None and phase != "RolledBack":
        message += f": {stable_problem.describe()}"
    # Each kind of problem is told once, as an Event, when it first shows in the status; its
    # text carries counters (pods, restarts) that change without anything new to say.
    known = " ".join([before.message, *(c.message for c in before.conditions)]) if before else ""
    for revision, problem in shown.items():
        if f" {problem.reason}" not in known:
            st.event("PodsNotReady", f"revision {revision}: {problem.describe()}", warning=True)
    if phase == "Paused" and human and (before is None or before.phase != "Paused"):
        st.event("AwaitingPromotion", human)

    conditions = [
        _condition(
            "Ready",
            stable_ready > 0,
            "Serving" if stable_ready else stable_problem.reason if stable_problem else "NoReadyPods",
            f"{stable_ready}/{replicas} pods of stable revision {stable} ready"
            + (f"; {stable_problem.describe()}" if stable_problem else ""),
            old,
            st.now,
            gen,
        ),
        _condition(
            "Progressing",
            candidate is not None and not status.paused and not human,
            "Paused"
            if status.paused
            else "AwaitingPromotion"
            if human
            else "RolloutInProgress"
            if candidate
            else "NoRollout",
            message if candidate else "no rollout in progress",
            old,
            st.now,
            gen,
        ),
    ]
    promoted = any(e.reason == "Promoted" for e in st.events)
    prev_promoted = next((c for c in old if c.type == "Promoted"), None)
    if promoted:
        conditions.append(_condition("Promoted", True, "Promoted", f"revision {stable} promoted", old, st.now, gen))
    elif candidate is not None:
        conditions.append(
            _condition("Promoted", False, "RolloutInProgress", f"rolling out {candidate}", old, st.now, gen)
        )
    elif prev_promoted is not None:
        conditions.append(prev_promoted)
    rolled_back = status.phase == "RolledBack" or phase == "RolledBack"
    conditions.append(
        _condition(
            "RolledBack",
            rolled_back and candidate is None,
            "RolledBack" if rolled_back and candidate is None else "NotRolledBack",
            status.message if rolled_back and candidate is None else "",
            old,
            st.now,
            gen,
        )
    )
    if analysis is not None and candidate is not None:
        limit = md.spec.analysis.consecutive_error_limit
        available = not (analysis.verdict == "unavailable" and analysis.consecutive_errors >= max(1, limit))
        conditions.append(
            _condition(
                "AnalysisAvailable",
                available,
                "MetricsAvailable" if available else "MetricsUnavailable",
                analysis.reason if not available else "metrics are being read",
                old,
                st.now,
                gen,
            )
        )
    elif (prev := next((c for c in old if c.type == "AnalysisAvailable"), None)) is not None:
        conditions.append(prev)
    capacity = st.inputs.capacity
    if capacity is not None:
        # Pods still to place: the candidate's, or the stable ones not ready yet.
        needed = _candidate_wanted(st) if candidate else max(0, replicas - stable_ready)
        enough = capacity.free_pods >= needed
        reason = "Sufficient" if enough else ("SurgeFree" if swap else "InsufficientGPUCapacity")
        text = (
            f"{capacity.free_pods} more pods of {capacity.per_pod}x {capacity.resource} fit; "
            f"the rollout needs {needed}"
            + ("; trading stable replicas for candidate ones" if swap and not enough else "")
            + (f" ({capacity.detail})" if capacity.detail else "")
        )
        conditions.append(_condition("GPUCapacity", enough, reason, text, old, st.now, gen))
        if not enough and md.spec.strategy.surge == "always" and candidate is not None:
            phase, message = "Progressing", f"waiting for GPU capacity: {text}"

    handled = [*reversed(st.handled), *status.handled_requests][:HANDLED_REQUESTS_KEPT]
    scale_down = [s for s in status.scale_down if s.at > st.now]
    # The evidence of a verdict about the rollout this pass began with is kept, also when that
    # verdict ended the rollout (rolled back, promoted); not when another rollout replaced it.
    given = st.inputs.analysis
    evidence = (
        given.status
        if given is not None
        and given.judged == comparison(md.spec, st.inputs.md.status)
        and candidate in (None, given.judged.candidate)
        else None
    )
    last_analysis = evidence or status.last_analysis
    new_status = status.model_copy(
        update={
            "observed_generation": gen,
            "phase": phase,
            "message": message,
            "conditions": conditions,
            "traffic": traffic,
            "canary_weight": candidate_weight,
            "handled_requests": handled,
            "scale_down": scale_down,
            "last_analysis": last_analysis,
        }
    )
    return Plan(tuple(workloads), new_status, tuple(st.events), comparison(md.spec, new_status))


def _rollout_message(st: _State, weight: int, human: str | None, problems: dict[str, PodProblem]) -> str:
    md, status = st.inputs.md, st.status
    strategy = md.spec.strategy.type
    head = f"{strategy} {status.candidate_revision}"
    if strategy == "canary":
        steps = _steps(st)
        index = status.current_step_index or 0
        head += f" step {min(index, len(steps))}/{len(steps)}, weight {weight}%"
    elif strategy == "shadow":
        assert md.spec.strategy.shadow is not None
        head += f", mirroring {md.spec.strategy.shadow.mirror_percent}%"
    else:
        head += f", candidate weight {weight}%"
    analysis = st.analysis
    if status.paused:
        head += f" (paused: {status.pause_reason or 'on-call'})"
    elif human:
        head += f" ({human})"
    elif analysis is not None:
        head += f"; analysis: {analysis.verdict}" + (f" ({analysis.reason})" if analysis.reason else "")
    for revision, role in (
        (status.candidate_revision, "candidate"),
        ((status.stable_revision or "") + BASELINE_SUFFIX, "baseline"),
    ):
        problem = problems.get(revision or "")
        if problem is not None:
            head += f"; {role} pods: {problem.describe()}"
    return head
