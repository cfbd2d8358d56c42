"""On-call requests: read from the annotations, each handled at most once, one function per action.

A request's id is its annotation's value; the last id handled per action is kept in
status.lastHandledRequests, so an annotation left in place (GitOps, no drift) never runs
again, and writing a new value is a new request. Every request gets an answer, in
status.handledRequests and as an event: what was done, or why it was ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from cutover.api.v1alpha1 import REQUEST_ANNOTATIONS
from cutover.api.v1alpha1.modeldeployment import ModelDeploymentStatus

from . import reasons
from .state import Pass
from .transitions import end_fallback, switch_stable
from .transitions import promote as promote_candidate
from .transitions import rollback as roll_back
from .types import Request


def requests_in(annotations: dict[str, str]) -> list[Request]:
    """Every on-call request present in the annotations (handled or not: the state machine
    tells the new ones from the handled ones by ``status.lastHandledRequests``)."""
    return [Request(action, value) for action, key in REQUEST_ANNOTATIONS.items() if (value := annotations.get(key))]


def rollback_target(request_id: str) -> str:
    """The revision a rollbackTo request names: its value is ``REVISION`` or ``REVISION@ID``
    (the form `kubectl cutover rollback --to` writes, so that asking for the same revision again
    is a new request)."""
    return request_id.split("@", 1)[0]


def is_new(request: Request, status: ModelDeploymentStatus, last_handled: dict[str, str]) -> bool:
    """Whether ``request`` was not handled yet (``last_handled``: the last id per action)."""
    last = last_handled.get(request.action)
    if last is not None:
        return request.id != last
    # Written by a version that kept only the recent history: anything in it is done.
    return not any(h.action == request.action and h.id == request.id for h in status.handled_requests)


def handle(p: Pass, desired: str) -> None:
    """Handle each request in the annotations at most once, forever: its id is remembered as the
    last handled one for its action, whatever it led to (ignored requests included)."""
    known = dict(p.state.last_handled_requests)
    new = [r for r in p.inputs.requests if is_new(r, p.stored, known)]
    p.state = replace(p.state, last_handled_requests={**known, **{r.action: r.id for r in p.inputs.requests}})
    for request in new:
        action = ACTIONS.get(request.action)
        if action is not None:
            action(p, request, desired)


def pause(p: Pass, request: Request, desired: str) -> None:
    if p.state.candidate_revision is None:
        p.answer(request, "ignored: nothing is rolling out", ok=False)
        return
    p.state = replace(p.state, paused=True, pause_reason=f"on-call request {request.id}")
    p.answer(request, "rollout paused")


def resume(p: Pass, request: Request, desired: str) -> None:
    """Resume a paused rollout, and end a fallback (stable takes the traffic back)."""
    fallback, paused = p.state.fallback_revision, p.state.paused
    if fallback is None and not paused:
        p.answer(request, "ignored: the rollout is not paused", ok=False)
        return
    done = []
    if fallback is not None:
        end_fallback(p, f"on-call request {request.id}; stable {p.state.stable_revision} serves again")
        done.append(f"fallback to {fallback} ended")
    if paused:
        p.state = replace(p.state, paused=False, pause_reason="", last_progress_at=p.now)
        done.append("rollout resumed")
    p.answer(request, "; ".join(done))


def promote(p: Pass, request: Request, desired: str) -> None:
    """Promote at the last step (or with an id starting ``full``); before it, advance one step."""
    state = p.state
    if state.candidate_revision is None:
        p.answer(request, "ignored: nothing is rolling out", ok=False)
    elif request.id.startswith("full") or p.strategy.at_last_step(p):
        if p.ready(state.candidate_revision):
            promote_candidate(p, f"on-call request {request.id}")
            p.answer(request, "candidate promoted")
        else:
            p.answer(request, "ignored: the candidate has no ready pod to take traffic; ask again later", ok=False)
    else:
        p.state = replace(
            state,
            current_step_index=(state.current_step_index or 0) + 1,
            step_started_at=p.now,
            last_progress_at=p.now,
            paused=False,
            pause_reason="",
        )
        p.answer(request, f"advanced to step {p.state.current_step_index}")


def abort(p: Pass, request: Request, desired: str) -> None:
    if p.state.candidate_revision is None:
        p.answer(request, "ignored: nothing is rolling out", ok=False)
        return
    roll_back(p, reasons.ABORTED, f"aborted by on-call request {request.id}")
    p.answer(request, "rollout aborted")


def rollback(p: Pass, request: Request, desired: str) -> None:
    """Roll the candidate back; with none, make the previous stable revision stable again."""
    if p.state.candidate_revision is not None:
        roll_back(p, reasons.ROLLED_BACK_BY_REQUEST, f"on-call request {request.id}")
        p.answer(request, f"rolled back to {p.state.stable_revision}")
        return
    previous = next((r.revision for r in p.state.history[1:]), None)
    if previous is None:
        p.answer(request, "ignored: no earlier stable revision in history", ok=False)
        return
    switch_stable(p, previous, desired, f"on-call request {request.id}", reasons.ROLLED_BACK_BY_REQUEST)
    p.answer(request, f"rolled back to {previous}")


def rollback_to(p: Pass, request: Request, desired: str) -> None:
    """Make a revision from the history stable, rolling back any candidate first."""
    state = p.state
    rolling = state.candidate_revision is not None
    target = rollback_target(request.id)
    if target == state.stable_revision and not rolling:
        p.answer(request, f"ignored: {target} is already stable", ok=False)
    elif state.source_of(target) is None:
        known = ", ".join(r.revision for r in state.history) or "none"
        p.answer(request, f"ignored: {target} is not in the revision history (known: {known})", ok=False)
    else:
        if rolling:
            roll_back(p, reasons.ROLLED_BACK_BY_REQUEST, f"on-call request to roll back to {target}")
        if target != p.state.stable_revision:
            switch_stable(p, target, desired, f"on-call request {request.id}", reasons.ROLLED_BACK_BY_REQUEST)
        p.answer(request, f"rolled back to {target}")


def retry(p: Pass, request: Request, desired: str) -> None:
    """Roll out again the revision that was rolled back, if the spec still asks for it."""
    rejected = p.state.rejected_revision
    if rejected is None or rejected != desired:
        p.answer(request, "ignored: no rolled-back revision to retry", ok=False)
        return
    p.state = replace(p.state, rejected_revision=None)
    p.answer(request, f"retrying {desired}")


ACTIONS: dict[str, Callable[[Pass, Request, str], None]] = {
    "pause": pause,
    "resume": resume,
    "promote": promote,
    "abort": abort,
    "rollback": rollback,
    "rollbackTo": rollback_to,
    "retry": retry,
}
"""The handler of each action (the keys of REQUEST_ANNOTATIONS)."""
