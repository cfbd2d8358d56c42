"""The operator's own Prometheus metrics, and the role series (``cutover_revision_role``) that
rendered PrometheusRules join on to tell a candidate from the stable revision."""

from __future__ import annotations

import contextlib
import math
from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from cutover.api.contract import REVISION_ROLE
from cutover.api.v1alpha1 import ModelDeployment
from cutover.api.v1alpha1.modeldeployment import (
    AnalysisStatus,
    MetricEvidence,
    ModelDeploymentStatus,
    Phase,
    ScalingLimit,
)

from .alerts.evaluator import live_revisions
from .rollout import AnalysisInput, Plan, reasons
from .rollout.status import ANALYSIS_AVAILABLE as ANALYSIS_AVAILABLE_CONDITION

RECONCILES = Counter("cutover_operator_reconciles", "Reconcile passes", ["kind"])
RECONCILE_ERRORS = Counter("cutover_operator_reconcile_errors", "Reconcile passes that failed", ["kind"])
RECONCILE_SECONDS = Histogram(
    "cutover_operator_reconcile_duration_seconds",
    "Time of one reconcile pass",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LEADER = Gauge(
    "cutover_operator_leader",
    "1 while this operator process holds its leader election Lease, 0 while it waits for it; lease: the Lease's "
    "name (one per shard), empty for an operator that runs without leader election",
    ["lease"],
)
PHASE = Gauge("cutover_rollout_phase", "1 for the ModelDeployment's current phase", ["namespace", "name", "phase"])
WEIGHT = Gauge("cutover_rollout_candidate_weight", "Percent of live traffic on the candidate", ["namespace", "name"])
DECISIONS = Counter("cutover_rollout_decisions", "Analysis verdicts acted on", ["verdict"])
TRANSITIONS = Counter("cutover_rollout_transitions", "Promotions, rollbacks and other transitions", ["reason"])
LAST_PROGRESS = Gauge(
    "cutover_rollout_last_progress_timestamp_seconds",
    "When the rollout in progress last moved (status.lastProgressAt: a step, more candidate pods ready), "
    "Unix seconds; no series while nothing rolls out",
    ["namespace", "name"],
)
ANALYSIS_AVAILABLE = Gauge(
    "cutover_rollout_analysis_available",
    "1 while the rollout in progress can read its metrics, 0 once they failed consecutiveErrorLimit times "
    "in a row (condition AnalysisAvailable False: weights frozen); no series while nothing rolls out",
    ["namespace", "name"],
)
WATCH_RESTARTS = Counter(
    "cutover_operator_watch_restarts",
    "Lists of the operator's own watches (GPU nodes and pods) started again after the first: the API server "
    "ended the watch (ended) or a list or the connection failed (failed)",
    ["resource", "reason"],
)
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
    phase, weight, verdict acted on, transitions, the live revisions' roles and the last
    analysis' evidence)."""
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
    _export_analysis((namespace, name), plan.status.last_analysis)
    _export_rollout(namespace, name, plan.status)
    _export_autoscaling(namespace, name, plan)


def _export_rollout(namespace: str, name: str, status: ModelDeploymentStatus) -> None:
    """The rollout in progress as the series the chart's PrometheusRule watches (stuck
    rollouts, analysis unavailable); none while no candidate rolls out, so that a finished
    rollout's last values raise no alert."""
    progressed = status.last_progress_at if status.candidate_revision else None
    if progressed is None:
        _forget_rollout(namespace, name)
        return
    LAST_PROGRESS.labels(namespace, name).set(progressed.timestamp())
    available = next((c for c in status.conditions if c.type == ANALYSIS_AVAILABLE_CONDITION), None)
    if available is None:
        with contextlib.suppress(KeyError):
            ANALYSIS_AVAILABLE.remove(namespace, name)
    else:
        ANALYSIS_AVAILABLE.labels(namespace, name).set(1.0 if available.status == "True" else 0.0)


def _forget_rollout(namespace: str, name: str) -> None:
    for gauge in (LAST_PROGRESS, ANALYSIS_AVAILABLE):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


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


ANALYSIS_ESTIMATE = Gauge(
    "cutover_analysis_estimate",
    "The last analysis' point estimate per metric: the candidate relative to its baseline (status.lastAnalysis)",
    ["namespace", "name", "metric"],
)
ANALYSIS_LOWER = Gauge(
    "cutover_analysis_lower_bound",
    "The last analysis' lower confidence bound per metric, valid at any stopping time; none when unbounded",
    ["namespace", "name", "metric"],
)
ANALYSIS_UPPER = Gauge(
    "cutover_analysis_upper_bound",
    "The last analysis' upper confidence bound per metric; none when unbounded",
    ["namespace", "name", "metric"],
)
ANALYSIS_DECISION = Gauge(
    "cutover_analysis_decision",
    "1 for each metric's decision in the last analysis (pass, fail, continue, inconclusive), 0 for the others",
    ["namespace", "name", "metric", "decision"],
)
METRIC_DECISIONS = get_args(MetricEvidence.model_fields["decision"].annotation)
_analysed: dict[tuple[str, str], set[str]] = {}
"""Per ModelDeployment (namespace, name), the metrics its analysis series are exported for, so
that a metric that leaves status.lastAnalysis loses its series at the next pass."""


def _export_analysis(key: tuple[str, str], analysis: AnalysisStatus | None) -> None:
    """status.lastAnalysis as gauges, for the dashboards' decisions and bounds: per metric its
    estimate, bounds (a bound status leaves out, being unbounded, has no series) and decision."""
    evidence = {metric.name: metric for metric in analysis.metrics} if analysis is not None else {}
    for metric in _analysed.get(key, set()) - set(evidence):
        _forget_metric(key, metric)
    for metric, found in evidence.items():
        for gauge, value in (
            (ANALYSIS_ESTIMATE, found.estimate),
            (ANALYSIS_LOWER, found.lower),
            (ANALYSIS_UPPER, found.upper),
        ):
            if value is None or not math.isfinite(value):
                with contextlib.suppress(KeyError):
                    gauge.remove(*key, metric)
            else:
                gauge.labels(*key, metric).set(value)
        for decision in METRIC_DECISIONS:
            ANALYSIS_DECISION.labels(*key, metric, decision).set(1.0 if found.decision == decision else 0.0)
    if evidence:
        _analysed[key] = set(evidence)
    else:
        _analysed.pop(key, None)


def _forget_metric(key: tuple[str, str], metric: str) -> None:
    for gauge in (ANALYSIS_ESTIMATE, ANALYSIS_LOWER, ANALYSIS_UPPER):
        with contextlib.suppress(KeyError):
            gauge.remove(*key, metric)
    for decision in METRIC_DECISIONS:
        with contextlib.suppress(KeyError):
            ANALYSIS_DECISION.remove(*key, metric, decision)


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
    """Drop every series of a ModelDeployment that is gone (its loop ended): phase, weight, roles,
    the rollout's and the autoscaler's."""
    for phase in PHASES:
        with contextlib.suppress(KeyError):
            PHASE.remove(namespace, name, phase)
    with contextlib.suppress(KeyError):
        WEIGHT.remove(namespace, name)
    _export_roles((namespace, name), "", [])
    _export_analysis((namespace, name), None)
    _forget_rollout(namespace, name)
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
