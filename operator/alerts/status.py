"""An AlertRule's status and Events after one evaluation: pure, no I/O, no clock.

:func:`decide` takes the status the rule had, the instances after this evaluation, the
problems met (queries, targets, windows, Secrets) and what the notifier did, and returns the
new status and the Events to post. Events mark changes only (an instance that starts firing or
resolves, a condition that turns bad or changes its reason, a window that opens or closes, a
delivery that failed), so a rule stuck on a bad query posts one Event, not one per interval.

Conditions:

- ``Ready``: the rule can be evaluated as written. False with ``InvalidSpec`` (only the operator
  can tell), ``QueryInvalid`` (a query Prometheus refuses, or an unknown template variable) or
  ``InvalidMaintenanceWindow`` (an unknown time zone, a cron field out of range).
- ``Stalled``: True with the same reasons as Ready False: a spec problem ends only with a new
  spec, so kstatus (Flux) reads the rule as Failed where Ready False alone reads as InProgress.
- ``DataAvailable``: every instance had a value. False with ``NoData``,
  ``QueryReturnedSeveralSeries``, ``MetricsUnavailable`` or ``TargetNotFound``: the instances
  without a value keep their state (missing data is neither a violation nor a recovery).
- ``Notified``: the last deliveries were accepted. False with ``NotificationFailed`` and the
  receivers' errors; left as it was on evaluations that sent nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cutover.api.v1alpha1 import AlertRule, Condition
from cutover.api.v1alpha1.alertrule import AlertInstanceStatus, AlertRuleStatus, DeliveryStatus

from .evaluator import Problem, QueryInvalid
from .instances import Instance, rule_state
from .windows import OpenWindow

INVALID_WINDOW = "InvalidMaintenanceWindow"
TARGET_NOT_FOUND = "TargetNotFound"
NOTIFICATION_FAILED = "NotificationFailed"
STALLED = "Stalled"
NOT_STALLED = "NotStalled"
_SPEC_PROBLEMS = frozenset({QueryInvalid.reason, INVALID_WINDOW})
"""Problems that only a change of the AlertRule fixes: they make it not Ready."""
_MESSAGE_LIMIT = 2000


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the AlertRule."""

    type: str
    """Normal or Warning."""
    reason: str
    message: str


@dataclass(frozen=True)
class Delivered:
    """What the notifier did this evaluation, and when the next firing message is due."""

    sent: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()
    next_at: datetime | None = None


def restore(status: AlertRuleStatus | None) -> list[Instance]:
    """The instances kept in ``status`` (after an operator restart: where they stood)."""
    if status is None:
        return []
    return [
        Instance(
            target=kept.target,
            model="",
            revision=kept.revision,
            role=kept.role,
            state=kept.state,
            value=kept.value,
            threshold=kept.threshold,
            violations=kept.violations,
            since=kept.since,
            fired_at=kept.fired_at,
            message=kept.message,
        )
        for kept in status.instances
    ]


def _shown(instance: Instance) -> AlertInstanceStatus:
    value = instance.value
    message = instance.message
    if value is not None and not math.isfinite(value):
        # JSON has no infinity: an infinite ratio (stable at 0) is said in words.
        message = f"{message}; the ratio is infinite" if message else "the value is infinite"
        value = None
    return AlertInstanceStatus(
        target=instance.target,
        revision=instance.revision,
        role=instance.role,
        state=instance.state,
        value=value,
        threshold=instance.threshold,
        violations=instance.violations,
        since=instance.since,
        fired_at=instance.fired_at,
        message=message[:_MESSAGE_LIMIT],
    )


def _condition(
    previous: Sequence[Condition], kind: str, ok: bool, reason: str, message: str, generation: int | None, now: datetime
) -> Condition:
    status = "True" if ok else "False"
    before = next((c for c in previous if c.type == kind), None)
    since = before.last_transition_time if before is not None and before.status == status else now
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message[:_MESSAGE_LIMIT],
        last_transition_time=since,
        observed_generation=generation,
    )


def _joined(problems: Sequence[Problem]) -> str:
    return "; ".join(dict.fromkeys(p.message for p in problems))


def decide(
    rule: AlertRule,
    previous: AlertRuleStatus | None,
    instances: Sequence[Instance],
    problems: Sequence[Problem],
    window: OpenWindow | None,
    delivered: Delivered,
    now: datetime,
) -> tuple[AlertRuleStatus, list[Event]]:
    """The status after one evaluation at ``now`` and the Events that announce what changed.

    ``instances`` are the rule's instances after this evaluation (instances.advance);
    ``problems`` every problem met, spec problems (:data:`_SPEC_PROBLEMS`) and data problems
    alike; ``window`` the maintenance window open now, if any; ``delivered`` the notifier's
    counts for this evaluation (added to the status' running totals)."""
    old = previous or AlertRuleStatus()
    generation = rule.metadata.generation
    events: list[Event] = []
    before = {(i.target, i.revision): i for i in old.instances}
    for instance in instances:
        was = before.get(instance.key)
        if was is not None and was.state == instance.state:
            continue
        where = f"{instance.target} revision {instance.revision} ({instance.role})"
        if instance.state == "Firing":
            value = "no value" if instance.value is None else f"{instance.value:.4g}"
            events.append(
                Event(
                    "Warning",
                    "AlertFiring",
                    f"{where}: {value} {rule.spec.condition.operator} {instance.threshold:g} "
                    f"for {rule.spec.for_} evaluations",
                )
            )
        elif instance.state == "Resolved":
            events.append(Event("Normal", "AlertResolved", f"{where}: back within the threshold"))

    spec_problems = [p for p in problems if p.reason in _SPEC_PROBLEMS]
    data_problems = [p for p in problems if p.reason not in _SPEC_PROBLEMS]
    conditions = [
        _condition(
            old.conditions,
            "Ready",
            not spec_problems,
            spec_problems[0].reason if spec_problems else "Evaluated",
            _joined(spec_problems) if spec_problems else f"evaluated {len(instances)} instance(s)",
            generation,
            now,
        ),
        _condition(
            old.conditions,
            "DataAvailable",
            not data_problems,
            data_problems[0].reason if data_problems else "DataAvailable",
            _joined(data_problems) if data_problems else "every instance had a value",
            generation,
            now,
        ),
        _condition(
            old.conditions,
            STALLED,
            bool(spec_problems),
            spec_problems[0].reason if spec_problems else NOT_STALLED,
            _joined(spec_problems) if spec_problems else "",
            generation,
            now,
        ),
    ]
    deliveries = old.deliveries
    if delivered.sent or delivered.failed:
        last_error = delivered.errors[-1] if delivered.errors else deliveries.last_error
        conditions.append(
            _condition(
                old.conditions,
                "Notified",
                not delivered.failed,
                NOTIFICATION_FAILED if delivered.failed else "Delivered",
                "; ".join(delivered.errors) if delivered.failed else f"{delivered.sent} deliveries accepted",
                generation,
                now,
            )
        )
        deliveries = DeliveryStatus(
            sent=deliveries.sent + delivered.sent,
            failed=deliveries.failed + delivered.failed,
            last_error=last_error[:_MESSAGE_LIMIT],
            last_sent_at=now if delivered.sent else deliveries.last_sent_at,
        )
        for error in delivered.errors:
            events.append(Event("Warning", NOTIFICATION_FAILED, error[:_MESSAGE_LIMIT]))
    else:
        conditions += [c for c in old.conditions if c.type == "Notified"]
    deliveries = deliveries.model_copy(update={"next_at": delivered.next_at})

    old_by_type = {c.type: c for c in old.conditions}
    for condition in conditions[:2]:
        was_condition = old_by_type.get(condition.type)
        changed = was_condition is None or (was_condition.status, was_condition.reason, was_condition.message) != (
            condition.status,
            condition.reason,
            condition.message,
        )
        if condition.status == "False" and changed:
            events.append(Event("Warning", condition.reason, condition.message))

    was_silenced = old.state == "Silenced" or any(i.state == "Silenced" for i in old.instances)
    if window is not None and not was_silenced:
        events.append(
            Event(
                "Normal",
                "MaintenanceWindowStarted",
                f"maintenanceWindows[{window.index}] open until {window.end.isoformat()}: no notifications or actions",
            )
        )
    elif window is None and was_silenced:
        events.append(Event("Normal", "MaintenanceWindowEnded", "notifications and actions resume"))

    firing = [i for i in instances if i.state == "Firing"]
    fired = [i.fired_at for i in instances if i.fired_at is not None]
    status = AlertRuleStatus(
        observed_generation=generation,
        state="Silenced" if window is not None else rule_state(instances),
        consecutive_violations=max((i.violations for i in instances), default=0),
        last_evaluated_at=now,
        fired_at=max(fired, default=old.fired_at),
        last_notified_at=deliveries.last_sent_at,
        next_notification_at=delivered.next_at,
        firing_targets=sorted({i.target for i in firing}),
        firing=len(firing),
        instances=[_shown(i) for i in instances],
        deliveries=deliveries,
        conditions=conditions,
    )
    return status, events
