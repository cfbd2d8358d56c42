"""The operator's own Prometheus metrics, and the role series (``cutover_revision_role``) that
rendered PrometheusRules join on to tell a candidate from the stable revision."""

from __future__ import annotations

import contextlib
from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from cutover.api.contract import REVISION_ROLE
from cutover.api.v1alpha1 import ModelDeployment
from cutover.api.v1alpha1.modeldeployment import Phase, ScalingLimit

from .alerts.evaluator import live_revisions
from .rollout import AnalysisInput, Plan, reasons

RECONCILES = Counter("cutover_operator_reconciles", "Reconcile passes", ["kind"])
RECONCILE_ERRORS = Counter("cutover_operator_reconcile_errors", "Reconcile passes that failed", ["kind"])
RECONCILE_SECONDS = Histogram(
    "cutover_operator_reconcile_duration_seconds",
    "Time of one reconcile pass",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LEADER = Gauge("cutover_operator_leader", "1 while this operator process holds the leader election Lease")
PHASE = Gauge("cutover_rollout_phase", "1 for the ModelDeployment's current phase", ["namespace", "name", "phase"])
WEIGHT = Gauge("cutover_rollout_candidate_weight", "Percent of live traffic on the candidate", ["namespace", "name"])
DECISIONS = Counter("cutover_rollout_decisions", "Analysis verdicts acted on", ["verdict"])
TRANSITIONS = Counter("cutover_rollout_transitions", "Promotions, rollbacks and other transitions", ["reason"])
ALERT_ACTIONS = Counter(
    "cutover_alert_actions",
    "AlertRule actions answered on ModelDeployments (taken: true when done, false when ignored)",
    ["action", "taken"],
)
_ALERT_ACTIONS = {reasons.alert_action(action): action for action in ("pause", "rollback", "fallback")}
PHASES = get_args(Phase)
_COUNTED = frozenset(
    {
        reasons.ROLLOUT_STARTED,
        reasons.PROMOTED,
        reasons.ANALYSIS_FAILED,
        reasons.ANALYSIS_TIMEOUT,
        reasons.PROGRESS_DEADLINE_EXCEEDED,
        reasons.SHADOW_DISAGREEMENT,
        reasons.AB_TEST_ENDED,
        reasons.ABORTED,
        reasons.ROLLED_BACK_BY_REQUEST,
        reasons.ROLLED_BACK_BY_ALERT,
        reasons.FALLBACK_STARTED,
    }
)
"""Event reasons counted as transitions: rollouts started, promotions, rollbacks of a candidate."""


def observe(md: ModelDeployment, plan: Plan, analysis: AnalysisInput | None, seconds: float) -> None:
    """Record one reconcile pass of ``md`` that took ``seconds`` and produced ``plan`` (the
    phase, weight, verdict acted on, transitions and the live revisions' roles)."""
    namespace, name = md.metadata.namespace or "", md.metadata.name or ""
    RECONCILES.labels("ModelDeployment").inc()
    RECONCILE_SECONDS.labels("ModelDeployment").observe(seconds)
    for phase in PHASES:
        PHASE.labels(namespace, name, phase).set(1.0 if plan.status.phase == phase else 0.0)
    WEIGHT.labels(namespace, name).set(plan.status.canary_weight)
    if analysis is not None:
        DECISIONS.labels(analysis.verdict).inc()
    for event in plan.events:
        if event.reason in _COUNTED:
            TRANSITIONS.labels(event.reason).inc()
        if event.reason in _ALERT_ACTIONS:
            ALERT_ACTIONS.labels(_ALERT_ACTIONS[event.reason], str(event.type == "Normal").lower()).inc()
    _export_roles((namespace, name), md.spec.model.name, live_revisions(md.model_copy(update={"status": plan.status})))
    _export_autoscaling(namespace, name, plan)


AUTOSCALER_REPLICAS = Gauge(
    "cutover_autoscaler_replicas",
    "Pods the autoscaler found (current) and decided (desired) for the model at full size",
    ["namespace", "name", "kind"],
)
AUTOSCALER_METRIC = Gauge(
    "cutover_autoscaler_metric_value",
    "The deciding metric's average per pod, and its target",
    ["namespace", "name", "metric", "kind"],
)
AUTOSCALER_LIMITED = Gauge(
    "cutover_autoscaler_limited",
    "1 for what held the autoscaler's count away from what its metric asked (status.autoscaling.limitedBy)",
    ["namespace", "name", "reason"],
)
SCALING_LIMITS = get_args(ScalingLimit)


def _export_autoscaling(namespace: str, name: str, plan: Plan) -> None:
    """The autoscaler's last decision as gauges; none for a ModelDeployment without it."""
    scaled = plan.status.autoscaling
    if scaled is None:
        _forget_autoscaling(namespace, name)
        return
    AUTOSCALER_REPLICAS.labels(namespace, name, "current").set(scaled.current_replicas)
    AUTOSCALER_REPLICAS.labels(namespace, name, "desired").set(scaled.desired_replicas)
    if scaled.metric and scaled.value is not None and scaled.target is not None:
        AUTOSCALER_METRIC.labels(namespace, name, scaled.metric, "value").set(scaled.value)
        AUTOSCALER_METRIC.labels(namespace, name, scaled.metric, "target").set(scaled.target)
    for reason in SCALING_LIMITS:
        if reason:
            AUTOSCALER_LIMITED.labels(namespace, name, reason).set(1.0 if scaled.limited_by == reason else 0.0)


def _forget_autoscaling(namespace: str, name: str) -> None:
    for gauge, labels in (
        (AUTOSCALER_REPLICAS, [("current",), ("desired",)]),
        (AUTOSCALER_METRIC, [(m, k) for m in ("inFlight", "gpuUtilization") for k in ("value", "target")]),
        (AUTOSCALER_LIMITED, [(reason,) for reason in SCALING_LIMITS if reason]),
    ):
        for rest in labels:
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name, *rest)


REVISION_ROLE_GAUGE = Gauge(REVISION_ROLE.name, REVISION_ROLE.help, list(REVISION_ROLE.labels))
_roles: dict[tuple[str, str], set[tuple[str, ...]]] = {}
"""Per ModelDeployment (namespace, name), the role series it exports now, so that a revision
that leaves the traffic table (or a model that is renamed) loses its series at the next pass."""


def _export_roles(key: tuple[str, str], model: str, live: list[tuple[str, str]]) -> None:
    """Set ``cutover_revision_role`` to 1 for each live (revision, role), the ones the AlertRule
    evaluator measures (``live_revisions``: the traffic table), and remove the series of ``key``
    that are no longer live. A revision listed twice keeps its first role: a join on the series
    needs one role per revision."""
    wanted: dict[str, tuple[str, ...]] = {}
    for revision, role in live:
        wanted.setdefault(revision, (key[0], model, revision, role))
    now = set(wanted.values())
    for labels in _roles.get(key, set()) - now:
        REVISION_ROLE_GAUGE.remove(*labels)
    for labels in now:
        REVISION_ROLE_GAUGE.labels(*labels).set(1.0)
    if now:
        _roles[key] = now
    else:
        _roles.pop(key, None)


def forget(namespace: str, name: str) -> None:
    """Drop every series of a ModelDeployment that is gone (its loop ended): phase, weight, roles
    and the autoscaler's."""
    for phase in PHASES:
        with contextlib.suppress(KeyError):
            PHASE.remove(namespace, name, phase)
    with contextlib.suppress(KeyError):
        WEIGHT.remove(namespace, name)
    _export_roles((namespace, name), "", [])
    _forget_autoscaling(namespace, name)


# ---- AlertRules --------------------------------------------------------------------------------

ALERT_EVALUATIONS = Counter("cutover_alert_evaluations", "AlertRule evaluations", ["namespace", "alertrule"])
ALERT_EVALUATION_ERRORS = Counter(
    "cutover_alert_evaluation_errors",
    "Problems met by AlertRule evaluations (a query that does not parse, returns several series or "
    "no data, Prometheus unavailable, an invalid spec or window), by condition reason",
    ["namespace", "alertrule", "reason"],
)
ALERT_INSTANCES = Gauge("cutover_alert_instances", "AlertRule instances by state", ["namespace", "alertrule", "state"])
ALERT_NOTIFICATIONS = Counter(
    "cutover_alert_notifications", "AlertRule notification deliveries (message x target)", ["namespace", "alertrule"]
)
ALERT_NOTIFICATION_FAILURES = Counter(
    "cutover_alert_notification_failures",
    "AlertRule notification deliveries that failed after their retries",
    ["namespace", "alertrule"],
)
ALERT_STATES = ("Inactive", "Pending", "Firing", "Resolved", "Silenced")


def observe_alert(namespace: str, name: str, states: list[str], problems: list[str], sent: int, failed: int) -> None:
    """Count one evaluation of AlertRule ``namespace/name``: its instances' states, the reasons of
    the problems it met, and the deliveries sent and failed."""
    ALERT_EVALUATIONS.labels(namespace, name).inc()
    for reason in problems:
        ALERT_EVALUATION_ERRORS.labels(namespace, name, reason).inc()
    for state in ALERT_STATES:
        ALERT_INSTANCES.labels(namespace, name, state).set(states.count(state))
    if sent:
        ALERT_NOTIFICATIONS.labels(namespace, name).inc(sent)
    if failed:
        ALERT_NOTIFICATION_FAILURES.labels(namespace, name).inc(failed)


def forget_alert(namespace: str, name: str) -> None:
    """Drop every series of an AlertRule that is gone (its loop ended): instance gauges,
    evaluation, problem and delivery counters (a rule created again under the name counts from 0)."""
    for state in ALERT_STATES:
        with contextlib.suppress(KeyError):
            ALERT_INSTANCES.remove(namespace, name, state)
    for counter in (ALERT_EVALUATIONS, ALERT_NOTIFICATIONS, ALERT_NOTIFICATION_FAILURES):
        with contextlib.suppress(KeyError):
            counter.remove(namespace, name)
    problems = {labels[2] for labels in _label_sets(ALERT_EVALUATION_ERRORS) if labels[:2] == (namespace, name)}
    for reason in problems:
        ALERT_EVALUATION_ERRORS.remove(namespace, name, reason)


def _label_sets(metric: Counter) -> list[tuple[str, ...]]:
    """The label values of every child ``metric`` has now."""
    return [tuple(labels) for labels in metric._metrics]  # prometheus_client has no public list
