"""Alert instances and their state machine: pure, no I/O, no clock.

An instance is one AlertRule x one target ModelDeployment x one live revision of it. Each
evaluation gives it a value (or none, with the reason) and :func:`step` moves it:

    Inactive --violation--> Pending --violations reach `for`--> Firing
    Pending --no violation--> Inactive
    Firing --no violation--> Resolved --next evaluation--> Inactive (or Pending again)

Missing data (the query failed, returned nothing or NaN) is neither a violation nor a recovery:
the state and the count stay where they were and ``message`` says why (unlike Prometheus, where
an empty result resolves the alert). Only a Resolved instance moves on to Inactive, because its
one evaluation of being Resolved (so that a resolved message can go) is over either way.

Inside a maintenance window every instance *shows* Silenced (:func:`advance`); the count of
violations keeps running underneath, and :func:`underlying` recovers the state from it, so a
Silenced instance read back from status after an operator restart resumes exactly. The one thing
a window swallows is a Resolved step: nothing notifies or acts while Silenced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

State = Literal["Inactive", "Pending", "Firing", "Resolved", "Silenced"]
"""The state of one alert instance."""

Operator = Literal[">", ">=", "<", "<="]
"""How a value is compared against the threshold (the AlertRule's ``condition.operator``)."""

RuleState = Literal["Inactive", "Pending", "Firing", "Silenced"]
"""The state of a whole rule: its worst instance."""

# Worst first: what `kubectl get ar` shows for a rule with several instances.
_SEVERITY: dict[State, int] = {"Firing": 4, "Pending": 3, "Silenced": 2, "Resolved": 1, "Inactive": 0}


@dataclass(frozen=True)
class Instance:
    """One alert instance: one rule x one target ModelDeployment x one live revision."""

    target: str
    """``namespace/name`` of the ModelDeployment."""
    model: str
    """Its ``spec.model.name``."""
    revision: str
    """The revision hash."""
    role: str
    """stable | candidate | baseline | preview | previous."""
    state: State
    value: float | None
    """Last evaluated value (the ratio to stable when ``relativeTo: stable``); None = no data."""
    threshold: float
    violations: int
    """Violating evaluations in a row."""
    since: datetime | None
    """When it entered ``state``."""
    fired_at: datetime | None
    """When it last started firing."""
    message: str = ""
    """Why there is no data, or what the value means."""

    @property
    def key(self) -> tuple[str, str]:
        """``(target, revision)``: what identifies the instance within its rule."""
        return (self.target, self.revision)


@dataclass(frozen=True)
class Observation:
    """What one evaluation saw for one target revision: a value, or None and the reason."""

    target: str
    model: str
    revision: str
    role: str
    value: float | None
    message: str = ""


def violates(value: float, operator: Operator, threshold: float) -> bool:
    """Whether ``value operator threshold`` holds (the rule is violated). NaN never violates."""
    if math.isnan(value):
        return False
    if operator == ">":
        return value > threshold
    if operator == ">=":
        return value >= threshold
    if operator == "<":
        return value < threshold
    return value <= threshold


def inactive(target: str, model: str, revision: str, role: str, threshold: float) -> Instance:
    """A new instance that has seen nothing yet."""
    return Instance(
        target=target,
        model=model,
        revision=revision,
        role=role,
        state="Inactive",
        value=None,
        threshold=threshold,
        violations=0,
        since=None,
        fired_at=None,
    )


def underlying(instance: Instance, for_: int) -> State:
    """The state an instance has beneath Silenced, recovered from its count of violations."""
    if instance.state != "Silenced":
        return instance.state
    if instance.violations >= for_:
        return "Firing"
    if instance.violations > 0:
        return "Pending"
    return "Inactive"


def step(previous: Instance, observation: Observation, *, operator: Operator, for_: int, now: datetime) -> Instance:
    """Move ``previous`` by one evaluation that saw ``observation``.

    ``for_`` is the number of violating evaluations in a row that fire (at least 1); ``now`` is
    the evaluation time (timezone-aware). The result is never Silenced: see :func:`advance`.
    """
    if for_ < 1:
        raise ValueError(f"for must be at least 1, not {for_}")
    state = underlying(previous, for_)
    base = dataclasses.replace(previous, model=observation.model, role=observation.role, state=state)
    if observation.value is None or math.isnan(observation.value):
        reason = observation.message or "no data"
        frozen = "Inactive" if state == "Resolved" else state
        return _enter(dataclasses.replace(base, value=None, message=reason), frozen, now)
    value = observation.value
    base = dataclasses.replace(base, value=value, message=observation.message)
    if violates(value, operator, previous.threshold):
        violations = previous.violations + 1
        counted = dataclasses.replace(base, violations=violations)
        if violations >= for_:
            if state == "Firing":
                return counted
            return dataclasses.replace(_enter(counted, "Firing", now), fired_at=now)
        return _enter(counted, "Pending", now)
    cleared = dataclasses.replace(base, violations=0)
    if state == "Firing":
        return _enter(cleared, "Resolved", now)
    return _enter(cleared, "Inactive", now)


def _enter(instance: Instance, state: State, now: datetime) -> Instance:
    """``instance`` in ``state``; ``since`` moves only when the state changes."""
    if instance.state == state and instance.since is not None:
        return instance
    return dataclasses.replace(instance, state=state, since=now)


def advance(
    previous: Iterable[Instance],
    observations: Sequence[Observation],
    *,
    operator: Operator,
    threshold: float,
    for_: int,
    now: datetime,
    silenced: bool,
) -> list[Instance]:
    """One evaluation of a rule: every observed target revision stepped, in observation order.

    Instances whose revision was not observed (no longer live) are dropped; a newly observed
    revision starts Inactive. ``threshold`` is the rule's current threshold (a changed spec takes
    effect at once). With ``silenced`` every result shows Silenced.
    """
    by_key: Mapping[tuple[str, str], Instance] = {instance.key: instance for instance in previous}
    stepped: list[Instance] = []
    for seen in observations:
        before = by_key.get((seen.target, seen.revision))
        if before is None:
            before = inactive(seen.target, seen.model, seen.revision, seen.role, threshold)
        else:
            before = dataclasses.replace(before, threshold=threshold)
        after = step(before, seen, operator=operator, for_=for_, now=now)
        if silenced:
            since = before.since if before.state == "Silenced" else now
            after = dataclasses.replace(after, state="Silenced", since=since)
        elif before.state == "Silenced":
            # Leaving a window: the instance shows its real state again, from now.
            after = dataclasses.replace(after, since=now)
        stepped.append(after)
    return stepped


def rule_state(instances: Iterable[Instance]) -> RuleState:
    """The worst state among ``instances`` (Firing > Pending > Silenced > Inactive; Resolved shows Inactive)."""
    worst: State = "Inactive"
    for instance in instances:
        if _SEVERITY[instance.state] > _SEVERITY[worst]:
            worst = instance.state
    return "Inactive" if worst == "Resolved" else worst


def firing(instances: Iterable[Instance]) -> list[Instance]:
    """The instances that are Firing (not Silenced: a window holds notifications and actions)."""
    return [instance for instance in instances if instance.state == "Firing"]
