"""AlertRules on the real control plane, evaluated by the real `cutover operator` process against
a real Prometheus: status.instances, the conditions and Events a broken rule gets (a query that
does not parse, one that returns several series, a notification URL from a missing Secret,
a target that does not exist), the loop going on for every other rule meanwhile, and the
printer columns of `kubectl get ar`.

The queries are PromQL over constants (``vector(0.5)``), so no scrape is needed for a value: the
point here is the loop and the API, not the metrics (tests/e2e/test_alerts.py measures real
traffic)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.kubectl import Kube
from tests.support.prometheus import Prometheus
from tests.support.waiting import wait_until

from .operator_support import Operator
from .test_operator import deploy_v1, fast_canary

pytestmark = pytest.mark.cluster

SEVERAL_SERIES = 'label_replace(vector(1), "shard", "a", "", "") or label_replace(vector(2), "shard", "b", "", "")'


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus with nothing to scrape: the rules' queries are over constants."""
    server = Prometheus(tmp_path, [])
    server.start()
    yield server
    server.stop()


def alert_rule(name: str, target: str, query: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "AlertRule",
        "metadata": {"name": name},
        "spec": {
            "target": {"name": target},
            "metric": {"query": query, "window": "1m"},
            "condition": {"operator": ">", "threshold": 0.1},
            "interval": "1s",
            "for": 2,
            "severity": "critical",
            **spec,
        },
    }


def rule_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kube.json("get", "alertrule", name, "-n", namespace).get("status") or {}
    return found


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def events(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.kind=AlertRule,involvedObject.name={name}"
    found: list[dict[str, Any]] = kube.json("get", "events", "-n", namespace, "--field-selector", selector)["items"]
    return found


def wait_condition(kube: Kube, namespace: str, name: str, kind: str, reason: str) -> dict[str, Any]:
    """Until the rule's condition ``kind`` is False with ``reason``; that condition."""

    def reached() -> dict[str, Any] | None:
        found = condition(rule_status(kube, namespace, name), kind)
        return found if (found.get("status"), found.get("reason")) == ("False", reason) else None

    found: dict[str, Any] = wait_until(
        reached,
        60,
        f"{name}: {kind} False with {reason}",
        detail=lambda: str(rule_status(kube, namespace, name)),
    )
    return found


def wait_event(kube: Kube, namespace: str, name: str, reason: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: next((e for e in events(kube, namespace, name) if e["reason"] == reason), None),
        30,
        f"an Event {reason} on {name}",
        detail=lambda: str([(e["reason"], e["message"]) for e in events(kube, namespace, name)]),
    )
    return found


def test_a_rule_fires_per_revision_and_broken_rules_say_why_while_the_others_go_on(
    kube: Kube, namespace: str, operator: Operator, prometheus: Prometheus
) -> None:
    doc = fast_canary("scorer", analysis={"interval": "1s", "prometheus": {"address": prometheus.address}})
    stable = deploy_v1(kube, namespace, doc)
    kube.apply(
        alert_rule("high", "scorer", "vector(0.5)", action="pause"),
        alert_rule("unparsable", "scorer", "sum(rate(cutover_requests_total[{{window}}]"),
        alert_rule("ambiguous", "scorer", SEVERAL_SERIES),
        alert_rule(
            "secretless",
            "scorer",
            "vector(0.5)",
            notifications=[{"type": "slack", "urlSecretRef": {"name": "slack-hooks", "key": "oncall"}}],
        ),
        alert_rule("orphan", "no-such-model", "vector(0.5)"),
        namespace=namespace,
    )

    # A query that does not parse: not Ready, named, and one Event that says the same.
    invalid = wait_condition(kube, namespace, "unparsable", "Ready", "QueryInvalid")
    assert "sum(rate(" in invalid["message"], invalid
    assert "QueryInvalid" in wait_event(kube, namespace, "unparsable", "QueryInvalid")["reason"]
    instance = rule_status(kube, namespace, "unparsable")["instances"][0]
    assert instance["revision"] == stable and instance["state"] == "Inactive" and "value" not in instance

    # Several series: no data for the instance, the series shown.
    ambiguous = wait_condition(kube, namespace, "ambiguous", "DataAvailable", "QueryReturnedSeveralSeries")
    assert "2 series" in ambiguous["message"] and "shard" in ambiguous["message"], ambiguous
    wait_event(kube, namespace, "ambiguous", "QueryReturnedSeveralSeries")

    # A target that does not exist.
    orphan = wait_condition(kube, namespace, "orphan", "DataAvailable", "TargetNotFound")
    assert "no-such-model" in orphan["message"], orphan

    # A notification URL from a Secret that does not exist: the delivery fails, saying which Secret.
    failed = wait_condition(kube, namespace, "secretless", "Notified", "NotificationFailed")
    assert f"Secret {namespace}/slack-hooks" in failed["message"] and "not found" in failed["message"], failed
    assert "notifications[0]" in wait_event(kube, namespace, "secretless", "NotificationFailed")["message"]
    secretless = rule_status(kube, namespace, "secretless")
    assert secretless["state"] == "Firing" and secretless["deliveries"]["failed"] >= 1, secretless

    # Meanwhile the healthy rule fired after `for` evaluations, per revision, and keeps being evaluated.
    high = wait_until(
        lambda: (s := rule_status(kube, namespace, "high")).get("state") == "Firing" and s,
        30,
        "the rule over vector(0.5) to fire",
    )
    [instance] = high["instances"]
    assert instance["target"] == f"{namespace}/scorer" and instance["revision"] == stable
    assert instance["role"] == "stable" and instance["state"] == "Firing"
    assert instance["value"] == 0.5 and instance["threshold"] == 0.1 and instance["violations"] >= 2
    assert instance["firedAt"] and high["firing"] == 1 and high["firingTargets"] == [f"{namespace}/scorer"]
    assert condition(high, "Ready")["status"] == "True" and condition(high, "DataAvailable")["status"] == "True"
    wait_event(kube, namespace, "high", "AlertFiring")
    evaluated = datetime.fromisoformat(high["lastEvaluatedAt"].replace("Z", "+00:00"))
    wait_until(
        lambda: (
            datetime.fromisoformat(rule_status(kube, namespace, "high")["lastEvaluatedAt"].replace("Z", "+00:00"))
            > evaluated
        ),
        30,
        "another evaluation of the healthy rule",
    )
    # pause with no rollout in progress is answered, not acted on
    answered = wait_until(
        lambda: [
            r
            for r in kube.json("get", "md", "scorer", "-n", namespace).get("status", {}).get("handledRequests") or []
            if r.get("by") == "AlertRule/high"
        ],
        30,
        "the pause request answered by the ModelDeployment",
    )
    assert answered[0]["action"] == "pause" and "ignored" in answered[0]["result"], answered
    assert "Traceback" not in operator.log()

    # The printer columns: State, Firing, Severity, Action, Age.
    table = kube.run("get", "ar", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "FIRING", "SEVERITY", "ACTION", "AGE"], table[0]
    rows = {line.split()[0]: line.split()[1:5] for line in table[1:]}
    assert rows["high"] == ["Firing", "1", "critical", "pause"], rows
    assert rows["unparsable"] == ["Inactive", "0", "critical", "none"], rows
