"""The moves every strategy shares: start a rollout, end it, roll it back, promote the
candidate, switch stable to an older revision. Each changes the pass's state and tells why
with an event; none looks at which strategy runs except through the pass's strategy.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from cutover.api.v1alpha1.base import seconds
from cutover.api.v1alpha1.modeldeployment import PostPromotionStatus, RevisionRecord, ScaleDown

from . import reasons
from .state import Pass, RolloutState, without_rollout
from .types import Event, Source, comparison

SCALE_DOWN_SECONDS = 30
"""How long a former stable keeps its pods after a switch the strategy sets no delay for."""


def record(
    state: RolloutState, revision: str, source: Source, version: str, now: datetime, limit: int
) -> tuple[RevisionRecord, ...]:
    """History with ``revision`` as the newest stable, bounded by revisionHistoryLimit (the
    current stable always stays, so a limit of 0 still knows what runs)."""
    kept = [r for r in state.history if r.revision != revision]
    newest = RevisionRecord(
        revision=revision,
        model_version=version,
        promoted_at=now,
        spec={"model": source.model, "runtime": source.runtime},
    )
    return tuple([newest, *kept][: max(1, limit + 1)])


def start_rollout(p: Pass, desired: str) -> None:
    """Roll ``desired`` out from step 0, replacing any candidate still in progress."""
    previous = p.state.candidate_revision
    if previous is not None:
        p.event(reasons.ROLLOUT_SUPERSEDED, f"candidate {previous} replaced by {desired} before it finished")
    p.state = replace(
        p.state,
        candidate_revision=desired,
        current_step_index=0,
        step_started_at=p.now,
        rollout_started_at=p.now,
        last_progress_at=p.now,
        canary_weight=0,
        last_analysis=None,
        rejected_revision=None,
    )
    p.event(
        reasons.ROLLOUT_STARTED,
        f"{p.spec.strategy.type} rollout of revision {desired} (model version "
        f"{p.spec.model.version}) against stable {p.state.stable_revision}",
    )


def end_rollout(p: Pass, message: str, reason: str) -> None:
    """Drop the rollout in progress (nothing is rejected)."""
    p.state = without_rollout(p.state)
    p.event(reason, message)


def rollback(p: Pass, reason: str, message: str) -> None:
    """Send everything back to stable now; the candidate is not retried until the spec changes."""
    candidate = p.state.candidate_revision
    p.state = replace(
        without_rollout(p.state),
        rejected_revision=candidate,
        phase="RolledBack",
        message=f"rolled back {candidate}: {message}",
    )
    p.events.append(Event("Warning", reason, f"rolled back {candidate} to stable {p.state.stable_revision}: {message}"))


def try_promote(p: Pass, how: str) -> None:
    """Promote once the candidate runs at full size; until then, scale it up. The decision is
    kept (status.promoting): the rollout has passed, whatever later verdicts short of a
    rollback say, and it counts as progress once."""
    candidate = p.state.candidate_revision
    if candidate is not None and p.ready(candidate) >= p.replicas:
        promote(p, how)
    elif not p.state.promoting:
        p.state = replace(p.state, promoting=True, last_progress_at=p.now)
        p.event(reasons.SCALING_UP, f"{candidate} passed ({how}); bringing it to full size before it takes all traffic")


def promote(p: Pass, how: str) -> None:
    """The candidate becomes stable; the old stable keeps its pods for the scale-down delay."""
    spec, state = p.spec, p.state
    candidate, old = state.candidate_revision, state.stable_revision
    assert candidate is not None and old is not None
    scale_down = [s for s in state.scale_down if s.revision not in (candidate, old)]
    scale_down.append(ScaleDown(revision=old, at=p.now + timedelta(seconds=p.strategy.scale_down_seconds())))
    watch = spec.analysis.post_promotion
    judged = comparison(spec, state)
    # A watched revision's predecessor stays in history whatever the limit: it is where a rollback goes.
    limit = max(spec.revision_history_limit, 1 if watch is not None else 0)
    p.state = replace(
        without_rollout(state),
        stable_revision=candidate,
        scale_down=tuple(scale_down),
        history=record(state, candidate, p.source, spec.model.version, p.now, limit),
        post_promotion=PostPromotionStatus(
            revision=candidate,
            previous=old,
            baseline=judged.baseline if judged else old,
            rollout_started_at=judged.started_at if judged else p.now,
            promoted_at=p.now,
            until=p.now + timedelta(seconds=seconds(watch.duration)),
            reason="watching for a rise of the error and slow-request rates since the rollout",
        )
        if watch is not None
        else None,
    )
    p.event(reasons.PROMOTED, f"revision {candidate} (model version {spec.model.version}) promoted: {how}")
    end_fallback(p, f"{candidate} promoted")


def switch_stable(p: Pass, target: str, desired: str, cause: str, reason: str) -> None:
    """Make an older stable revision stable again (its spec from history); the revision that
    was stable, and whatever the spec asks for, are not rolled out again without a retry."""
    state = p.state
    old = state.stable_revision
    target_record = next(r for r in state.history if r.revision == target)
    reordered = (
        target_record.model_copy(update={"promoted_at": p.now}),
        *[r for r in state.history if r.revision != target],
    )
    scale_down = [s for s in state.scale_down if s.revision not in (target, old)]
    if old is not None:
        scale_down.append(ScaleDown(revision=old, at=p.now + timedelta(seconds=SCALE_DOWN_SECONDS)))
    p.state = replace(
        state,
        stable_revision=target,
        history=reordered,
        scale_down=tuple(scale_down),
        phase="RolledBack",
        rejected_revision=desired if desired != target else None,
        message=f"rolled back from {old} to {target}: {cause}",
    )
    p.events.append(Event("Warning", reason, f"stable switched from {old} to {target}: {cause}"))
    end_fallback(p, f"stable switched to {target}")


def end_fallback(p: Pass, why: str) -> None:
    """End an AlertRule's fallback, if one lasts: stable serves again (a change of stable ends
    it too, since the fallback stood in for the stable it replaced)."""
    fallback = p.state.fallback_revision
    if fallback is None:
        return
    p.state = replace(p.state, fallback_revision=None, fallback_reason="")
    p.event(reasons.FALLBACK_ENDED, f"fallback to {fallback} ended: {why}")
