"""Planning an AlertRule's notifications (pure): grouping and its wait, repeats backing off up to
maxInterval, one resolved message per episode, silence in maintenance windows, stable dedupe
keys; and what the webhook JSON and the Slack message say."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from cutover.api import contract
from cutover.api.v1alpha1 import AlertRule
from cutover.api.v1alpha1.alertrule import AlertMetric
from cutover.operator.alerts.instances import Instance, State
from cutover.operator.alerts.notify import (
    Message,
    NotifyMemory,
    dedupe_key,
    next_due,
    plan,
    slack_body,
    webhook_body,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rule(**spec: Any) -> AlertRule:
    body: dict[str, Any] = {
        "target": {"selector": {"matchLabels": {"team": "risk"}}},
        "metric": {"builtin": "errorRate"},
        "condition": {"operator": ">", "threshold": 1.5, "relativeTo": "stable"},
        "severity": "critical",
        "repeat": {"interval": "5m", "backoffFactor": 2, "maxInterval": "1h"},
        "action": "rollback",
    }
    body.update(spec)
    return AlertRule.model_validate({"metadata": {"name": "risk-errors", "namespace": "payments"}, "spec": body})


def instance(target: str = "payments/fraud", revision: str = "c4nd", state: State = "Firing", **more: Any) -> Instance:
    fields: dict[str, Any] = {
        "model": target.split("/")[1],
        "role": "candidate",
        "value": 2.4,
        "threshold": 1.5,
        "violations": 3 if state == "Firing" else 0,
        "since": T0,
        "fired_at": T0 if state in ("Firing", "Resolved") else None,
    }
    fields.update(more)
    return Instance(target=target, revision=revision, state=state, **fields)


def run(
    alert: AlertRule, timeline: list[tuple[datetime, list[Instance]]], memory: NotifyMemory | None = None
) -> tuple[list[tuple[datetime, Message]], NotifyMemory]:
    """Plan every evaluation of ``timeline`` in turn; the messages with their evaluation times."""
    memory = memory or NotifyMemory()
    sent: list[tuple[datetime, Message]] = []
    for now, instances in timeline:
        messages, memory = plan(alert, instances, memory, now, silenced=False)
        sent += [(now, m) for m in messages]
    return sent, memory


def every(seconds: int, start: datetime, end: datetime) -> list[datetime]:
    times, now = [], start
    while now <= end:
        times.append(now)
        now += timedelta(seconds=seconds)
    return times


# ---- grouping and wait ---------------------------------------------------------------------------


def test_instances_of_one_model_fold_into_one_message_and_other_models_get_their_own() -> None:
    alert = rule(grouping={"by": ["model", "severity"], "wait": "0s"})
    fraud_a = instance("payments/fraud", "c4nd")
    fraud_b = instance("payments/fraud-eu", "c4nd", model="fraud")
    churn = instance("payments/churn", "9b1e")
    messages, _ = plan(alert, [fraud_a, churn, fraud_b], NotifyMemory(), T0, silenced=False)
    assert [(m.group, len(m.instances)) for m in messages] == [
        ((("model", "churn"), ("severity", "critical")), 1),
        ((("model", "fraud"), ("severity", "critical")), 2),
    ]
    assert {i.target for i in messages[1].instances} == {"payments/fraud", "payments/fraud-eu"}


def test_without_grouping_each_instance_notifies_alone_and_at_once() -> None:
    stable = instance(revision="st4b", role="stable")
    candidate = instance(revision="c4nd")
    messages, _ = plan(rule(), [stable, candidate], NotifyMemory(), T0, silenced=False)
    assert [m.group for m in messages] == [
        (("target", "payments/fraud"), ("revision", "c4nd")),
        (("target", "payments/fraud"), ("revision", "st4b")),
    ]


def test_the_first_message_waits_for_the_group_to_gather_then_names_everything_firing() -> None:
    alert = rule(grouping={"by": ["model"], "wait": "30s"})
    late = instance("payments/fraud-eu", "c4nd", model="fraud", fired_at=T0 + timedelta(seconds=10))
    sent, _ = run(
        alert,
        [
            (T0, [instance()]),
            (T0 + timedelta(seconds=10), [instance(), late]),
            (T0 + timedelta(seconds=20), [instance(), late]),
            (T0 + timedelta(seconds=30), [instance(), late]),
        ],
    )
    assert [(at - T0, len(m.instances)) for at, m in sent] == [(timedelta(seconds=30), 2)]


def test_a_group_that_resolves_inside_its_wait_sends_nothing_at_all() -> None:
    alert = rule(grouping={"by": ["model"], "wait": "1m"})
    sent, memory = run(
        alert,
        [
            (T0, [instance()]),
            (T0 + timedelta(seconds=30), [instance(state="Resolved")]),
            (T0 + timedelta(seconds=60), [instance(state="Inactive")]),
        ],
    )
    assert sent == [] and memory == NotifyMemory()


def test_an_instance_that_starts_firing_in_an_announced_group_is_news_sent_at_once() -> None:
    alert = rule(grouping={"by": ["model"], "wait": "0s"})
    other = instance("payments/fraud-eu", "c4nd", model="fraud")
    sent, _ = run(alert, [(T0, [instance()]), (T0 + timedelta(seconds=30), [instance(), other])])
    assert [(at - T0, len(m.instances), m.sequence) for at, m in sent] == [
        (timedelta(0), 1, 0),
        (timedelta(seconds=30), 2, 1),
    ]


def test_a_flapping_member_that_fires_again_is_not_news() -> None:
    alert = rule(grouping={"by": ["model"], "wait": "0s"})
    other = instance("payments/fraud-eu", "c4nd", model="fraud")
    calm = dataclasses.replace(other, state="Inactive")
    sent, _ = run(
        alert,
        [
            (T0, [instance(), other]),
            (T0 + timedelta(seconds=30), [instance(), calm]),
            (T0 + timedelta(seconds=60), [instance(), other]),
        ],
    )
    assert len(sent) == 1


# ---- repeats -------------------------------------------------------------------------------------


def test_repeats_back_off_5m_10m_20m_40m_then_stay_at_max_interval() -> None:
    sent, _ = run(rule(), [(now, [instance()]) for now in every(30, T0, T0 + timedelta(hours=5))])
    times = [at for at, _ in sent]
    gaps = [(b - a) // timedelta(minutes=1) for a, b in pairwise(times)]
    assert gaps == [5, 10, 20, 40, 60, 60, 60]
    assert [m.sequence for _, m in sent] == list(range(8))
    assert {m.state for _, m in sent} == {"firing"}


def test_repeat_gaps_follow_the_backoff_factor_and_a_factor_of_one_never_grows() -> None:
    alert = rule(repeat={"interval": "1m", "backoffFactor": 3, "maxInterval": "30m"})
    sent, _ = run(alert, [(now, [instance()]) for now in every(30, T0, T0 + timedelta(hours=2))])
    times = [at for at, _ in sent]
    assert [(b - a) // timedelta(minutes=1) for a, b in pairwise(times)][:5] == [1, 3, 9, 27, 30]
    steady = rule(repeat={"interval": "10m", "backoffFactor": 1, "maxInterval": "10m"})
    sent, _ = run(steady, [(now, [instance()]) for now in every(60, T0, T0 + timedelta(hours=1))])
    assert [at - T0 for at, _ in sent] == [timedelta(minutes=m) for m in range(0, 61, 10)]


def test_next_due_says_when_the_next_message_goes() -> None:
    alert = rule(grouping={"by": ["model"], "wait": "30s"})
    _, memory = plan(alert, [instance()], NotifyMemory(), T0, silenced=False)
    assert next_due(alert, memory) == T0 + timedelta(seconds=30)
    _, memory = plan(alert, [instance()], memory, T0 + timedelta(seconds=30), silenced=False)
    assert next_due(alert, memory) == T0 + timedelta(seconds=30, minutes=5)
    assert next_due(alert, NotifyMemory()) is None


# ---- resolved ------------------------------------------------------------------------------------


def test_a_group_that_stops_firing_sends_one_resolved_message_naming_what_fired() -> None:
    sent, memory = run(
        rule(),
        [
            (T0, [instance()]),
            (T0 + timedelta(seconds=30), [instance(state="Resolved", value=0.9)]),
            (T0 + timedelta(seconds=60), [instance(state="Inactive", value=0.9)]),
            (T0 + timedelta(seconds=90), [instance(state="Inactive", value=0.8)]),
        ],
    )
    assert [(at - T0, m.state) for at, m in sent] == [(timedelta(0), "firing"), (timedelta(seconds=30), "resolved")]
    resolved = sent[1][1]
    assert [(i.revision, i.state, i.value) for i in resolved.instances] == [("c4nd", "Resolved", 0.9)]
    assert memory == NotifyMemory()


def test_an_instance_no_longer_evaluated_still_gets_its_resolved_message() -> None:
    # A rolled-back candidate is no longer a live revision: its instance disappears.
    stable = instance(revision="st4b", role="stable", state="Inactive")
    sent, _ = run(rule(), [(T0, [instance(), stable]), (T0 + timedelta(seconds=30), [stable])])
    assert [m.state for _, m in sent] == ["firing", "resolved"]
    (gone,) = sent[1][1].instances
    assert (gone.revision, gone.state) == ("c4nd", "Resolved") and "no longer evaluated" in gone.message
    assert webhook_body(rule(), sent[1][1])["alerts"][0]["endsAt"] == "2026-03-01T12:00:30Z"


def test_a_new_episode_after_a_resolve_starts_with_a_fresh_first_message_and_backoff() -> None:
    later = T0 + timedelta(hours=1)
    sent, _ = run(
        rule(),
        [
            (T0, [instance()]),
            (T0 + timedelta(minutes=5), [instance()]),
            (T0 + timedelta(minutes=6), [instance(state="Resolved")]),
            (later, [instance(fired_at=later)]),
            (later + timedelta(minutes=5), [instance(fired_at=later)]),
        ],
    )
    assert [(at - T0, m.state, m.sequence) for at, m in sent] == [
        (timedelta(0), "firing", 0),
        (timedelta(minutes=5), "firing", 1),
        (timedelta(minutes=6), "resolved", 1),
        (timedelta(hours=1), "firing", 0),
        (timedelta(hours=1, minutes=5), "firing", 1),
    ]


# ---- maintenance windows -------------------------------------------------------------------------


def test_nothing_is_sent_while_silenced_and_memory_stands_still() -> None:
    _, memory = plan(rule(), [instance()], NotifyMemory(), T0, silenced=False)
    for minutes in range(1, 120):
        now = T0 + timedelta(minutes=minutes)
        messages, after = plan(rule(), [instance(state="Silenced")], memory, now, silenced=True)
        assert messages == [] and after == memory
    # A window flag alone silences too, whatever the instances show.
    assert plan(rule(), [instance()], NotifyMemory(), T0, silenced=True) == ([], NotifyMemory())


def test_after_a_window_an_overdue_repeat_goes_once_and_a_resolve_inside_it_still_arrives() -> None:
    _, memory = plan(rule(), [instance()], NotifyMemory(), T0, silenced=False)
    end = T0 + timedelta(hours=2)
    _, silent = plan(rule(), [instance(state="Silenced")], memory, end - timedelta(minutes=1), silenced=True)
    sent, after = run(rule(), [(end, [instance()]), (end + timedelta(seconds=30), [instance()])], silent)
    assert [(at, m.state, m.sequence) for at, m in sent] == [(end, "firing", 1)]
    # The alert recovered inside the window: its resolved message goes when the window ends.
    sent, _ = run(rule(), [(end, [instance(state="Inactive", value=0.7)])], silent)
    assert [m.state for _, m in sent] == ["resolved"]
    assert after.groups


# ---- dedupe keys ---------------------------------------------------------------------------------


def test_the_dedupe_key_is_one_per_group_across_repeats_resolve_episodes_and_restarts() -> None:
    alert = rule()
    timeline = [(now, [instance()]) for now in every(60, T0, T0 + timedelta(minutes=30))]
    timeline.append((T0 + timedelta(minutes=31), [instance(state="Resolved")]))
    sent, _ = run(alert, timeline)
    assert len(sent) == 4 and len({m.dedupe_key for _, m in sent}) == 1
    key = sent[0][1].dedupe_key
    # An operator restart forgets the memory; the same group gets the same key.
    restarted, _ = plan(alert, [instance()], NotifyMemory(), T0 + timedelta(hours=3), silenced=False)
    assert [m.dedupe_key for m in restarted] == [key]
    assert key == dedupe_key(alert, (("target", "payments/fraud"), ("revision", "c4nd")))
    # Another group, severity or rule: another key.
    assert dedupe_key(alert, (("target", "payments/fraud"), ("revision", "other"))) != key
    assert dedupe_key(rule(severity="warning"), sent[0][1].group) != key
    # Each delivery's Idempotency-Key tells the messages of one episode apart.
    assert len({m.idempotency_key for _, m in sent}) == 4


def test_a_restart_mid_episode_notifies_at_once_because_the_wait_began_when_it_fired() -> None:
    alert = rule(grouping={"by": ["model"], "wait": "5m"})
    long_ago = T0 - timedelta(hours=1)
    messages, _ = plan(alert, [instance(fired_at=long_ago)], NotifyMemory(), T0, silenced=False)
    assert [(m.state, m.episode) for m in messages] == [("firing", long_ago)]


# ---- what the messages say -----------------------------------------------------------------------


def _messages(alert: AlertRule, instances: list[Instance]) -> list[Message]:
    return plan(alert, instances, NotifyMemory(), T0, silenced=False)[0]


def test_the_webhook_json_names_rule_severity_state_instances_key_and_links() -> None:
    alert = rule(grouping={"by": ["model", "severity"], "wait": "0s"})
    stable = instance(revision="st4b", role="stable", state="Inactive", value=1.0)
    (message,) = _messages(alert, [instance(), stable])
    body = json.loads(json.dumps(webhook_body(alert, message)))
    assert body["rule"] == "payments/risk-errors" and body["severity"] == "critical"
    assert body["state"] == body["status"] == "firing"
    assert body["dedupeKey"] == body["groupKey"] == message.dedupe_key
    assert body["action"] == "rollback" and body["metric"] == "errorRate"
    assert body["condition"] == {"operator": ">", "threshold": 1.5, "relativeTo": "stable", "for": 3, "interval": "30s"}
    (only,) = body["instances"]
    assert only | {"since": None, "firedAt": None} == {
        "target": "payments/fraud",
        "model": "fraud",
        "revision": "c4nd",
        "role": "candidate",
        "state": "Firing",
        "value": 2.4,
        "valueText": "2.40x stable",
        "threshold": 1.5,
        "violations": 3,
        "since": None,
        "firedAt": None,
        "message": "",
    }
    assert only["firedAt"] == "2026-03-01T12:00:00Z"
    assert body["links"]["runbook"] == f"{contract.RUNBOOKS}#{contract.RUNBOOK_ANCHORS['errorRate']}"
    assert body["links"]["modelDeployments"] == [
        {
            "name": "payments/fraud",
            "api": "/apis/cutover.dev/v1alpha1/namespaces/payments/modeldeployments/fraud",
            "kubectl": "kubectl cutover status fraud -n payments",
        }
    ]
    # Alertmanager's v4 fields, for receivers written for it.
    assert body["version"] == "4" and body["groupLabels"] == {"model": "fraud", "severity": "critical"}
    (alert_v4,) = body["alerts"]
    assert alert_v4["labels"]["revision"] == "c4nd" and alert_v4["status"] == "firing"
    assert "2.40x stable > 1.50x stable" in alert_v4["annotations"]["description"]


def test_the_runbook_link_is_the_rules_annotation_when_set_and_none_for_an_unannotated_query() -> None:
    annotated = rule().model_copy(deep=True)
    annotated.metadata.annotations[contract.ANNOTATION_RUNBOOK_URL] = "https://wiki.example.com/fraud"
    (message,) = _messages(annotated, [instance()])
    assert webhook_body(annotated, message)["links"]["runbook"] == "https://wiki.example.com/fraud"
    query = rule(metric={"query": "sum(rate(x[{{window}}]))"}, condition={"operator": ">", "threshold": 3})
    (message,) = _messages(query, [instance(value=4.25, threshold=3.0)])
    body = webhook_body(query, message)
    assert body["links"]["runbook"] is None and body["instances"][0]["valueText"] == "4.25"
    assert "runbook_url" not in body["commonAnnotations"]


def test_every_builtin_metric_has_a_runbook_section() -> None:
    builtins = AlertMetric.model_fields["builtin"].annotation
    assert builtins is not None
    assert set(contract.RUNBOOK_ANCHORS) == set(builtins.__args__[0].__args__)


def test_values_read_in_their_units() -> None:
    cases = [
        ("errorRate", 0.0213, "2.13%"),
        ("latencyP99", 0.34, "340 ms"),
        ("latencyP50", 1.5, "1.5 s"),
        ("requestRate", 12.25, "12.2 req/s"),
        ("predictionConfidence", 0.871, "0.871"),
    ]
    for builtin, value, text in cases:
        alert = rule(metric={"builtin": builtin}, condition={"operator": ">", "threshold": 1})
        (message,) = _messages(alert, [instance(value=value)])
        assert webhook_body(alert, message)["instances"][0]["valueText"] == text
    (message,) = _messages(rule(), [instance(value=None, message="no samples for revision c4nd")])
    (line,) = webhook_body(rule(), message)["instances"]
    assert line["valueText"] == "no data" and line["message"] == "no samples for revision c4nd"


def test_the_slack_message_has_a_readable_text_and_blocks_per_instance() -> None:
    alert = rule(grouping={"by": ["model"], "wait": "0s"})
    other = instance("payments/fraud-eu", "e7a1", model="fraud", value=3.1)
    (message,) = _messages(alert, [instance(), other])
    body = json.loads(json.dumps(slack_body(alert, message)))
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith(":red_circle: [FIRING] payments/risk-errors (critical) model=fraud: 2 instances")
    kinds = [block["type"] for block in body["blocks"]]
    assert kinds == ["header", "section", "section", "section", "context"]
    assert body["blocks"][0]["text"]["text"] == "Firing: risk-errors (critical)"
    assert "*payments/fraud* revision `c4nd` (candidate)" in body["blocks"][2]["text"]["text"]
    assert "error rate *2.40x stable* &gt; 1.50x stable: Firing" in body["blocks"][2]["text"]["text"]
    context = " ".join(e["text"] for e in body["blocks"][-1]["elements"])
    assert "action: rollback" in context and "docs/runbooks.md#error-rate" in context
    assert "kubectl cutover status fraud-eu -n payments" in context
    resolved, _ = plan(alert, [], plan(alert, [instance()], NotifyMemory(), T0, silenced=False)[1], T0, silenced=False)
    assert slack_body(alert, resolved[0])["text"].startswith(":large_green_circle: [RESOLVED]")


def test_a_slack_message_lists_twenty_instances_and_counts_the_rest() -> None:
    alert = rule(grouping={"by": ["severity"], "wait": "0s"})
    many = [instance(f"payments/m{n}", "c4nd") for n in range(25)]
    (message,) = _messages(alert, many)
    blocks = slack_body(alert, message)["blocks"]
    assert len(blocks) == 2 + 20 + 1
    assert any(e["text"] == "and 5 more instances" for e in blocks[-1]["elements"])
