"""An AlertRule's status and Events after an evaluation: conditions that name what is wrong,
Events on changes only, instances that survive a restart, and the label selector it lists by."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from cutover.api.v1alpha1 import AlertRule
from cutover.api.v1alpha1.base import LabelSelector
from cutover.operator.alerts.evaluator import Problem
from cutover.operator.alerts.handlers import selector_text
from cutover.operator.alerts.instances import Instance, Observation, advance
from cutover.operator.alerts.status import Delivered, decide, restore
from cutover.operator.alerts.windows import OpenWindow
from tests.cases import AR, load

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
RULE = AlertRule.model_validate({**copy.deepcopy(load(AR)), "metadata": {"name": "r", "namespace": "payments"}})


def evaluated(values: list[float | None], silenced: bool = False) -> list[Instance]:
    """One instance after an evaluation per value, 30 s apart."""
    instances: list[Instance] = []
    for i, value in enumerate(values):
        seen = [Observation("payments/fraud", "fraud", "c0ffee", "candidate", value, "")]
        instances = advance(
            instances, seen, operator=">", threshold=1.5, for_=3, now=T0 + timedelta(seconds=30 * i), silenced=silenced
        )
    return instances


def test_firing_instance_in_status_and_one_event_when_it_starts() -> None:
    firing = evaluated([2.0, 2.0, 2.0])
    status, events = decide(RULE, None, firing, [], None, Delivered(), T0)
    assert status.state == "Firing"
    assert status.firing == 1
    assert status.firing_targets == ["payments/fraud"]
    shown = status.instances[0]
    assert (shown.target, shown.revision, shown.state, shown.value, shown.threshold) == (
        "payments/fraud",
        "c0ffee",
        "Firing",
        2.0,
        1.5,
    )
    assert [e.reason for e in events] == ["AlertFiring"]
    again, events = decide(RULE, status, evaluated([2.0, 2.0, 2.0, 2.0]), [], None, Delivered(), T0)
    assert events == [], "still firing is not news"
    wire = again.wire()
    assert wire["instances"][0]["firedAt"] and wire["firing"] == 1


def test_bad_query_makes_the_rule_not_ready_once() -> None:
    problem = Problem("QueryInvalid", "Prometheus refused the query: parse error")
    frozen = evaluated([None])
    status, events = decide(RULE, None, frozen, [problem], None, Delivered(), T0)
    ready = {c.type: c for c in status.conditions}
    assert (ready["Ready"].status, ready["Ready"].reason) == ("False", "QueryInvalid")
    assert "parse error" in ready["Ready"].message
    assert ready["DataAvailable"].status == "True"
    assert [e.reason for e in events] == ["QueryInvalid"]
    later, events = decide(RULE, status, frozen, [problem], None, Delivered(), T0 + timedelta(minutes=1))
    assert events == []
    assert {c.type: c for c in later.conditions}["Ready"].last_transition_time == T0


def test_missing_data_and_failed_deliveries_are_conditions_and_events() -> None:
    problems = [Problem("NoData", "payments/fraud revision c0ffee: the query returned nothing")]
    delivered = Delivered(sent=1, failed=1, errors=("notifications[0] (webhook, http://x): HTTP 500",))
    status, events = decide(RULE, None, evaluated([None]), problems, None, delivered, T0)
    conditions = {c.type: c for c in status.conditions}
    assert (conditions["DataAvailable"].status, conditions["DataAvailable"].reason) == ("False", "NoData")
    assert (conditions["Notified"].status, conditions["Notified"].reason) == ("False", "NotificationFailed")
    assert (status.deliveries.sent, status.deliveries.failed) == (1, 1)
    assert "HTTP 500" in status.deliveries.last_error
    assert {e.reason for e in events} == {"NoData", "NotificationFailed"}
    later, _ = decide(RULE, status, evaluated([None]), problems, None, Delivered(sent=2), T0)
    assert (later.deliveries.sent, later.deliveries.failed) == (3, 1), "running totals"


def test_a_window_silences_the_rule_and_says_so_at_its_edges() -> None:
    window = OpenWindow(0, T0, T0 + timedelta(hours=2))
    quiet = evaluated([2.0, 2.0, 2.0], silenced=True)
    status, events = decide(RULE, None, quiet, [], window, Delivered(), T0)
    assert status.state == "Silenced"
    assert status.firing == 0
    assert [e.reason for e in events] == ["MaintenanceWindowStarted"]
    after, events = decide(RULE, status, evaluated([2.0, 2.0, 2.0]), [], None, Delivered(), T0)
    assert after.state == "Firing"
    assert "MaintenanceWindowEnded" in [e.reason for e in events]


def test_instances_survive_a_restart_through_status() -> None:
    status, _ = decide(RULE, None, evaluated([2.0, 2.0]), [], None, Delivered(), T0)
    restored = restore(AlertRule.model_validate({**RULE.wire(), "status": status.wire()}).status)
    seen = [Observation("payments/fraud", "fraud", "c0ffee", "candidate", 2.0, "")]
    (after,) = advance(restored, seen, operator=">", threshold=1.5, for_=3, now=T0, silenced=False)
    assert after.state == "Firing", "the third violation in a row, counted across the restart"


def test_an_infinite_ratio_is_said_in_words() -> None:
    status, _ = decide(RULE, None, evaluated([float("inf")]), [], None, Delivered(), T0)
    assert status.instances[0].value is None
    assert "infinite" in status.instances[0].message


def test_selector_text() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"team": "risk"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector_text(selector) == "team=risk,tier in (a,b),!legacy"
