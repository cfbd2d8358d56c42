"""AlertRule actions: each firing of a rule that acts on this ModelDeployment is acted on once.

An AlertRule whose instance fires for one of the ModelDeployment's revisions reaches the state
machine as an :class:`~.types.AlertAction` (the handler reads the rules' status). The firing's
id (when it started firing) is kept per rule in ``status.lastHandledAlerts``, so an alert that
stays firing acts once, and one that resolves and fires again acts again. Every action is
answered in ``status.handledRequests`` with ``by: AlertRule/<name>``, like an on-call request,
and never writes ``spec``. On-call requests of the same pass are handled first.

What each action does (docs/alerts.md says the same for users):

- ``pause``: the rollout in progress is paused, whichever of its revisions fired; on-call
  resumes it with ``kubectl cutover resume``. With no rollout it is answered "ignored".
- ``rollback``: the revision that fired is taken out of service. The candidate (or blue/green
  preview): the rollout is rolled back and the candidate is not rolled out again until the
  spec changes or on-call retries. The stable revision (or its baseline pods): the last
  promotion is undone, as ``kubectl cutover rollback`` does: any rollout is rolled back and the
  previous stable revision in the history becomes stable. Any other revision: ignored.
- ``fallback`` (absolute rules only): the previous stable revision in the history serves all
  live traffic while stable stays stable and keeps its pods; any rollout in progress is rolled
  back first. It lasts until on-call sends ``kubectl cutover resume``, which returns the
  traffic to stable. Ignored when there is no previous revision, or when the fallback revision
  itself fired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from . import reasons
from .state import Pass
from .transitions import rollback as roll_back
from .transitions import switch_stable
from .types import BASELINE_SUFFIX, AlertAction, Request


def handle(p: Pass, desired: str) -> None:
    """Act on each firing not acted on yet (by ``status.lastHandledAlerts``), at most once."""
    handled = dict(p.state.last_handled_alerts)
    for alert in p.inputs.alerts:
        if handled.get(alert.rule) == alert.id:
            continue
        handled[alert.rule] = alert.id
        p.state = replace(p.state, last_handled_alerts=dict(handled))
        request = Request(alert.action, alert.id, f"AlertRule/{alert.rule}")
        ACTIONS[alert.action](p, alert, request, desired)


def _why(alert: AlertAction) -> str:
    detail = f": {alert.reason}" if alert.reason else ""
    return f"AlertRule {alert.rule} firing for {alert.revision}{detail}"


def pause(p: Pass, alert: AlertAction, request: Request, desired: str) -> None:
    if p.state.candidate_revision is None:
        p.answer(request, "ignored: nothing is rolling out", ok=False)
        return
    p.state = replace(p.state, paused=True, pause_reason=_why(alert))
    p.answer(request, "rollout paused")


def rollback(p: Pass, alert: AlertAction, request: Request, desired: str) -> None:
    state = p.state
    if alert.revision == state.candidate_revision:
        roll_back(p, reasons.ROLLED_BACK_BY_ALERT, _why(alert))
        p.answer(request, f"rolled back to {p.state.stable_revision}")
        return
    stable = state.stable_revision
    if stable is None or alert.revision not in (stable, stable + BASELINE_SUFFIX):
        p.answer(request, f"ignored: {alert.revision} is neither the candidate nor stable", ok=False)
        return
    previous = next((r.revision for r in state.history[1:]), None)
    if previous is None:
        p.answer(request, "ignored: no earlier stable revision in history", ok=False)
        return
    if state.candidate_revision is not None:
        roll_back(p, reasons.ROLLED_BACK_BY_ALERT, _why(alert))
    switch_stable(p, previous, desired, _why(alert), reasons.ROLLED_BACK_BY_ALERT)
    p.answer(request, f"rolled back to {previous}")


def fallback(p: Pass, alert: AlertAction, request: Request, desired: str) -> None:
    state = p.state
    previous = next((r.revision for r in state.history[1:]), None)
    if state.fallback_revision is not None:
        p.answer(request, f"ignored: already falling back to {state.fallback_revision}", ok=False)
        return
    if previous is None:
        p.answer(request, "ignored: no earlier stable revision in history", ok=False)
        return
    if alert.revision == previous:
        p.answer(request, f"ignored: {previous}, the revision to fall back to, is the one firing", ok=False)
        return
    if state.candidate_revision is not None:
        roll_back(p, reasons.ROLLED_BACK_BY_ALERT, _why(alert))
    p.state = replace(p.state, fallback_revision=previous, fallback_reason=_why(alert))
    p.event(
        reasons.FALLBACK_STARTED,
        f"revision {previous} serves all traffic instead of stable {p.state.stable_revision} ({_why(alert)}); "
        "kubectl cutover resume ends the fallback",
        warning=True,
    )
    p.answer(request, f"falling back to {previous}")


ACTIONS: dict[str, Callable[[Pass, AlertAction, Request, str], None]] = {
    "pause": pause,
    "rollback": rollback,
    "fallback": fallback,
}
"""The handler of each AlertRule action (spec.action other than none)."""
