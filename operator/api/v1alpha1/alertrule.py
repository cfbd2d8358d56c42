"""AlertRule (``ar``): an alert bound to ModelDeployments, evaluated by cutover itself.

It is rendered as a PrometheusRule where the Prometheus Operator is installed, but cutover
evaluates it either way, so notifications and actions work without Alertmanager.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from .base import (
    ApiModel,
    Conditions,
    DNSLabel,
    Duration,
    LabelSelector,
    ObjectMeta,
    Rule,
    one_of,
    seconds,
)
from .safetypolicy import Webhook


class AlertTarget(ApiModel):
    """Which ModelDeployments the alert watches: one by name, or all that match a selector."""

    name: DNSLabel | None = None
    """One ModelDeployment in this namespace."""
    selector: LabelSelector | None = None
    """Every ModelDeployment in this namespace whose labels match."""

    rules = (one_of("name", "selector", "target sets exactly one of name or selector"),)


class AlertMetric(ApiModel):
    """What is measured, per target revision."""

    builtin: (
        Literal[
            "errorRate",
            "latencyP99",
            "latencyP50",
            "predictionConfidence",
            "outOfDistributionRate",
            "safetyViolationRate",
            "requestRate",
            "accuracy",
            "calibrationError",
            "inputDrift",
        ]
        | None
    ) = None
    """A metric cutover knows how to query."""
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    """PromQL returning one value; variables {{model}}, {{namespace}}, {{revision}}, {{window}}."""
    window: Duration = "5m"
    """The range each evaluation looks back over."""

    rules = (one_of("builtin", "query", "metric sets exactly one of builtin or query"),)


class AlertCondition(ApiModel):
    """When a value violates the rule."""

    operator: Literal[">", ">=", "<", "<="]
    """Comparison of the value against the threshold."""
    threshold: float
    """The limit: an absolute value, or with relativeTo stable the ratio to the stable revision's value."""
    relative_to: Literal["absolute", "stable"] = "absolute"
    """absolute compares the value itself; stable compares value / stable value (1.5 = 50% worse)."""

    rules = (
        Rule(
            cel="self.relativeTo != 'stable' || self.threshold > 0.0",
            message="a threshold relative to stable is a ratio and must be positive",
            check=lambda s: s.relative_to != "stable" or s.threshold > 0,
        ),
    )


class Repeat(ApiModel):
    """How often a firing alert notifies again, backing off exponentially."""

    interval: Duration = "5m"
    """Wait before the first repeat."""
    backoff_factor: Annotated[float, Field(ge=1, le=10)] = 2.0
    """Each wait is this many times the previous one."""
    max_interval: Duration = "4h"
    """Longest wait between repeats."""

    rules = (
        Rule(
            cel="duration(self.maxInterval) >= duration(self.interval)",
            message="repeat.maxInterval must be at least repeat.interval",
            check=lambda s: seconds(s.max_interval) >= seconds(s.interval),
        ),
    )


class Grouping(ApiModel):
    """Fold alerts that fire together into one notification."""

    by: Annotated[list[Literal["model", "revision", "namespace", "severity"]], Field(min_length=1, max_length=4)]
    """Alerts with equal values of these fields share a notification."""
    wait: Duration = "30s"
    """How long to gather alerts of one group before notifying."""


class MaintenanceWindow(ApiModel):
    """A time when the alert notifies no one and takes no action: once, or on a schedule."""

    start: datetime | None = None
    """Start of a one-off window (RFC 3339)."""
    end: datetime | None = None
    """End of a one-off window."""
    schedule: Annotated[str, StringConstraints(pattern=r"^(\S+\s+){4}\S+$")] | None = None
    """Start of a recurring window, as a five-field cron expression (UTC unless timeZone)."""
    duration: Duration | None = None
    """Length of a recurring window."""
    time_zone: Annotated[str, StringConstraints(max_length=64)] = "UTC"
    """IANA time zone of schedule."""

    rules = (
        Rule(
            cel="(has(self.start) && has(self.end) && !has(self.schedule) && !has(self.duration)) || "
            "(!has(self.start) && !has(self.end) && has(self.schedule) && has(self.duration))",
            message="a maintenance window is either start and end, or schedule and duration",
            check=lambda s: (
                (s.start is not None and s.end is not None and s.schedule is None and s.duration is None)
                or (s.start is None and s.end is None and s.schedule is not None and s.duration is not None)
            ),
        ),
        Rule(
            cel="!has(self.start) || !has(self.end) || timestamp(self.end) > timestamp(self.start)",
            message="a maintenance window must end after it starts",
            check=lambda s: s.start is None or s.end is None or s.end > s.start,
        ),
    )


class Notification(Webhook):
    """A notification target."""

    type: Literal["webhook", "slack"] = "webhook"
    """webhook posts cutover's JSON payload; slack posts a Slack-format message to an incoming webhook."""


class AlertRuleSpec(ApiModel):
    """An alert over ModelDeployments: metric, condition, severity, notifications and action."""

    target: AlertTarget
    """Which ModelDeployments are watched."""
    metric: AlertMetric
    """What is measured."""
    condition: AlertCondition
    """When the value violates the rule."""
    interval: Duration = "30s"
    """How often the rule is evaluated."""
    for_: Annotated[int, Field(ge=1, le=1000, alias="for")] = 3
    """Consecutive violating evaluations before the alert fires."""
    severity: Literal["critical", "warning", "info"] = "warning"
    """Severity label, also on the PrometheusRule."""
    repeat: Repeat = Repeat()
    """Repeat notifications while firing."""
    grouping: Grouping | None = None
    """Group notifications."""
    maintenance_windows: Annotated[list[MaintenanceWindow], Field(max_length=32)] = []
    """Times when the alert stays silent and takes no action."""
    notifications: Annotated[list[Notification], Field(max_length=16)] = []
    """Where to notify."""
    action: Literal["none", "pause", "rollback", "fallback"] = "none"
    """What cutover does when the alert fires: nothing, pause the rollout, roll back the candidate,
    or switch the serving path to the fallback chain."""

    rules = (
        Rule(
            cel="self.condition.relativeTo != 'stable' || self.action != 'fallback'",
            message="an alert relative to stable compares a rollout's candidate; its action can be none, "
            "pause or rollback, not fallback",
            check=lambda s: s.condition.relative_to != "stable" or s.action != "fallback",
        ),
    )


InstanceState = Literal["Inactive", "Pending", "Firing", "Resolved", "Silenced"]


class AlertInstanceStatus(ApiModel):
    """One alert instance: this rule on one revision of one target ModelDeployment."""

    target: str
    """``namespace/name`` of the ModelDeployment."""
    revision: str
    """The revision hash."""
    role: str = ""
    """The revision's role in the target's rollout (stable, candidate, baseline, preview, previous)."""
    state: InstanceState = "Inactive"
    """Inactive, Pending, Firing, Resolved (for one evaluation after firing) or Silenced (maintenance)."""
    value: float | None = None
    """The last value (the ratio to stable with relativeTo stable); absent when there was no data."""
    threshold: float = 0.0
    """The threshold it was compared with."""
    violations: int = 0
    """Violating evaluations in a row."""
    since: datetime | None = None
    """When it entered its state."""
    fired_at: datetime | None = None
    """When it last started firing."""
    message: str = ""
    """Why there is no value, or what the value was compared with."""


class DeliveryStatus(ApiModel):
    """Notifications sent for this rule since the operator started evaluating it."""

    sent: int = 0
    """Deliveries (message x target) a receiver accepted."""
    failed: int = 0
    """Deliveries that failed after their retries."""
    last_error: str = ""
    """What went wrong with the last failed delivery."""
    last_sent_at: datetime | None = None
    """When a receiver last accepted a message."""
    next_at: datetime | None = None
    """When the next firing message is due (the first after grouping.wait, or a repeat)."""


class AlertRuleStatus(ApiModel):
    """The alert's state, written by the operator."""

    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    state: Literal["Inactive", "Pending", "Firing", "Silenced"] = "Inactive"
    """The worst instance state: Firing > Pending > Silenced > Inactive (a Resolved instance counts
    as Inactive)."""
    consecutive_violations: int = 0
    """Violating evaluations in a row."""
    last_evaluated_at: datetime | None = None
    """When the rule was last evaluated."""
    fired_at: datetime | None = None
    """When the alert last started firing."""
    last_notified_at: datetime | None = None
    """When a notification last went out."""
    next_notification_at: datetime | None = None
    """When the next repeat is due."""
    firing_targets: list[str] = []
    """ModelDeployments the alert fires for."""
    firing: int = 0
    """Instances firing now."""
    instances: Annotated[list[AlertInstanceStatus], Field(max_length=1000)] = []
    """One per target revision evaluated, in target order (the rule's state is the worst of them)."""
    deliveries: DeliveryStatus = DeliveryStatus()
    """Notifications sent and failed."""
    conditions: Conditions = []
    """Ready: the rule is valid and evaluated; DataAvailable: every instance had a value;
    Stalled: a spec problem only a new spec fixes (kstatus reads it as Failed); Notified: the
    last deliveries succeeded."""


class AlertRule(ApiModel):
    """An alert bound to model deployments, with notifications and an action."""

    model_config = {"extra": "ignore"}

    api_version: Literal["cutover.dev/v1alpha1"] = "cutover.dev/v1alpha1"
    kind: Literal["AlertRule"] = "AlertRule"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AlertRuleSpec
    status: AlertRuleStatus | None = None
