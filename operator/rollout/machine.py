"""The top of the state machine: one pass from inputs to plan.

``reconcile(inputs) -> Plan`` handles the new on-call requests, runs the post-promotion watch,
then either deploys the first revision, drops a rollout the spec no longer asks for, waits
after a rollback, or starts and moves the rollout the spec asks for: the strategy's own moves
(:mod:`.strategies`), then the progress deadline. :func:`.status.finish` turns the state the
pass reached into workloads, traffic table and status.
"""

from __future__ import annotations

from dataclasses import replace

from cutover.api.v1alpha1.modeldeployment import ModelDeploymentStatus

from . import alerts, reasons, requests
from .autoscaling import autoscale, scaled_by
from .state import Pass, RolloutState, elapsed
from .status import SAFETY_POLICY_READY, finish
from .strategies import strategy_for
from .traffic import provider_for
from .transitions import end_rollout, record, rollback, start_rollout, switch_stable, try_promote
from .types import AnalysisInput, Inputs, Plan, Source, revision_of
from .workloads import candidate_wanted


def reconcile(inputs: Inputs) -> Plan:
    """The plan for one pass. Pure: the same inputs give an equal plan, and applying a plan
    then reconciling again with nothing new moves nothing (the handler may crash and re-run at
    any point)."""
    md = inputs.md
    wire = md.spec.wire()
    source = Source(model=wire["model"], runtime=wire["runtime"])
    desired = revision_of(source.model, source.runtime)
    strategy = strategy_for(md.spec.strategy)
    state = RolloutState.of(md.status or ModelDeploymentStatus())
    p = Pass(inputs, state, source, strategy, provider_for(md.spec.traffic.provider, strategy))
    _autoscale(p)

    requests.handle(p, desired)
    alerts.handle(p, desired)
    _watch(p, desired)

    state = p.state
    if state.stable_revision is None:
        _initial(p, desired)
    elif desired == state.stable_revision:
        if state.candidate_revision is not None:
            end_rollout(
                p,
                f"spec returned to the stable revision {desired}; rollout of {state.candidate_revision} dropped",
                reason=reasons.ROLLOUT_SUPERSEDED,
            )
        if state.rejected_revision is not None:
            p.state = replace(p.state, rejected_revision=None)
    elif desired == state.rejected_revision and state.candidate_revision is None:
        pass  # rolled back: wait for a spec change or a retry
    elif state.fallback_revision is not None and state.candidate_revision is None:
        pass  # an alert's fallback serves: nothing new rolls out until on-call resumes
    else:
        if state.candidate_revision != desired:
            held = p.safety_hold
            if held is not None:
                # Fail closed: no rollout starts while the SafetyPolicy cannot be served. One
                # of a revision the spec no longer asks for is dropped (it would never finish).
                if state.candidate_revision is not None:
                    end_rollout(
                        p,
                        f"spec moved on to {desired}; rollout of {state.candidate_revision} dropped; "
                        f"{desired} waits for the SafetyPolicy: {held}",
                        reason=reasons.ROLLOUT_SUPERSEDED,
                    )
                return finish(p, desired)
            start_rollout(p, desired)
        _progress(p, desired)

    return finish(p, desired)


def _autoscale(p: Pass) -> None:
    """The autoscaler's step, first: the rest of the pass sizes every revision from the count
    it decided. It stands down while another scaler owns the Deployments' replicas."""
    spec = p.spec.runtime.autoscaling
    external = tuple(sorted(p.inputs.scaled_externally))
    if spec is None or external or scaled_by(p.md) is not None:
        p.state = replace(p.state, autoscaling=None, scaled_externally=external)
        return
    scaled = autoscale(spec, p.state.autoscaling, p.inputs.load, p.now)
    p.state = replace(p.state, autoscaling=scaled, scaled_externally=())


def _watch(p: Pass, desired: str) -> None:
    """The post-promotion watch: end it when its time is up or stable changed for another
    reason; when it finds a rise, roll back to the revision the watched one replaced (ending any
    rollout started since), or only warn with action none."""
    watched = p.state.post_promotion
    if watched is None or watched.state != "Watching":
        return
    spec = p.spec.analysis.post_promotion
    finding = p.inputs.watch if p.inputs.watch and p.inputs.watch.revision == watched.revision else None
    if spec is None or watched.revision != p.state.stable_revision:
        why = "analysis.postPromotion was removed" if spec is None else f"stable is now {p.state.stable_revision}"
        p.state = replace(p.state, post_promotion=watched.model_copy(update={"state": "Ended", "reason": why}))
    elif finding is not None and finding.alarm:
        regressed = watched.model_copy(update={"state": "Regressed", "reason": finding.reason})
        p.state = replace(p.state, post_promotion=regressed)
        if spec.action == "rollback" and p.state.source_of(watched.previous) is not None:
            if p.state.candidate_revision is not None:
                rollback(p, reasons.POST_PROMOTION_REGRESSION, f"stable {watched.revision} regressed after promotion")
            switch_stable(p, watched.previous, desired, finding.reason, reasons.POST_PROMOTION_REGRESSION)
        else:
            gone = f"; cannot roll back: {watched.previous} is no longer in the revision history"
            p.event(
                reasons.POST_PROMOTION_REGRESSION,
                finding.reason + (gone if spec.action == "rollback" else ""),
                warning=True,
            )
    elif p.now >= watched.until:
        reason = f"no rise found between {watched.promoted_at.isoformat()} and {watched.until.isoformat()}"
        p.state = replace(p.state, post_promotion=watched.model_copy(update={"state": "Passed", "reason": reason}))
        p.event(reasons.POST_PROMOTION_PASSED, f"revision {watched.revision}: {reason}")
    elif finding is not None and finding.reason != watched.reason:
        p.state = replace(p.state, post_promotion=watched.model_copy(update={"reason": finding.reason}))


def _initial(p: Pass, desired: str) -> None:
    """First revision: it is stable at once (there is nothing to compare it with)."""
    model = p.spec.model
    history = record(p.state, desired, p.source, model.version, p.now, p.spec.revision_history_limit)
    p.state = replace(p.state, stable_revision=desired, history=history)
    p.event(reasons.DEPLOYED, f"revision {desired} (model {model.name} {model.version}) is the first stable")


def _progress(p: Pass, desired: str) -> None:
    """Move the rollout on, hold it, promote it or roll it back."""
    analysis = p.analysis
    if p.state.candidate_revision is None:  # an on-call request ended it in this reconcile
        return
    if analysis is not None and analysis.verdict == "rollback":
        rollback(p, reasons.ANALYSIS_FAILED, analysis.reason)
        return
    candidate_ready = p.ready(desired)
    if candidate_ready > p.state.candidate_ready_replicas:
        # More candidate pods ready than ever in this rollout: progress, as for a Deployment (a
        # pod that keeps crashing and coming back is not).
        p.state = replace(p.state, last_progress_at=p.now, candidate_ready_replicas=candidate_ready)
    if p.safety_hold is not None:
        return  # fail closed: weights, steps and promotion wait for the SafetyPolicy (rollbacks do not)
    if p.inputs.safety is not None and _was_held(p):
        # The hold is over: the deadline counts from now, not from before the hold.
        p.state = replace(p.state, last_progress_at=p.now)
    if p.state.paused:
        return  # frozen by on-call (or by the operator, below) until a human acts
    if p.state.promoting:
        try_promote(p, "the candidate passed and runs at full size")
    elif analysis is None or analysis.verdict != "unavailable":  # unavailable: the weights stay frozen
        p.strategy.advance(p, candidate_ready, analysis)
    # The deadline is read after the pass moved what it could: a verdict or a timed pause that
    # came due while the operator was down is progress, not a reason to roll back.
    if p.state.candidate_revision is None or p.state.paused or p.strategy.awaiting_human(p, candidate_ready):
        return
    # Passed: only the candidate's pods are awaited, for no longer than the deadline itself.
    allowance = 0.0 if p.state.promoting else p.strategy.allowance(p)
    limit = p.spec.progress_deadline_seconds + allowance
    if elapsed(p.state.last_progress_at, p.now) > limit:
        _deadline_passed(p, candidate_ready, analysis, limit)


def _was_held(p: Pass) -> bool:
    """Whether the stored status says the SafetyPolicy held rollouts on the last pass."""
    stored = next((c for c in p.stored.conditions if c.type == SAFETY_POLICY_READY), None)
    return stored is not None and stored.status != "True"


def _deadline_passed(p: Pass, candidate_ready: int, analysis: AnalysisInput | None, limit: float) -> None:
    """The current wait outlived progressDeadlineSeconds plus its configured length. Pods that
    never became ready, or a verdict that never came, roll back; metrics that could not be
    read pause the rollout for a human instead (an outage is not the candidate's failure)."""
    candidate = p.state.candidate_revision
    wanted = candidate_wanted(p)
    if candidate_ready < wanted:
        problem = p.inputs.pod_problems.get(candidate or "")
        why = f": {problem.describe()}" if problem else ""
        capacity = p.inputs.capacity
        if capacity is not None and capacity.free_pods < wanted and not candidate_ready:
            why = why or f": {capacity.free_pods} more pods of this GPU shape fit, {wanted} needed"
        rollback(
            p,
            reasons.PROGRESS_DEADLINE_EXCEEDED,
            f"{candidate_ready}/{wanted} candidate pods ready after {limit:.0f}s{why}",
        )
    elif analysis is not None and analysis.verdict == "unavailable":
        reason = f"metrics unavailable for over {limit:.0f}s ({analysis.reason})"
        p.state = replace(p.state, paused=True, pause_reason=reason)
        p.event(
            reasons.ANALYSIS_UNAVAILABLE,
            f"rollout of {candidate} paused: {reason}; resume once metrics are back, or promote or abort",
            warning=True,
        )
    else:
        last = f"{analysis.verdict} ({analysis.reason})" if analysis else "none"
        rollback(p, reasons.PROGRESS_DEADLINE_EXCEEDED, f"no decision within {limit:.0f}s; last verdict: {last}")
