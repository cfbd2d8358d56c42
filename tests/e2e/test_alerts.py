"""AlertRules end to end, on the stack `make demo` runs (tests/e2e/test_full_stack.py): the real
control plane, real Prometheus scraping the real gateway and serving processes, the real operator,
steady client traffic, and notification receivers on loopback.

A canary whose candidate answers ~10% errors against the stable revision's ~2% fires an
errorRate rule relative to stable after exactly ``for`` evaluations; a webhook and a Slack-format
receiver each get one grouped firing message; the rule's action rolls the rollout back, recorded
in the ModelDeployment's status as a request by ``AlertRule/<name>``; the alert then resolves
and each receiver gets one resolved message. The same rule inside a maintenance window, on a
second canary just as bad, shows Silenced, notifies no one and leaves its rollout alone.

The ModelDeployments' own analysis is given margins it cannot fail, and their canary holds at 50%
(a pause without a duration), so only the AlertRule can roll them back."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hack.devstack import Stack
from tests.support.waiting import wait_until

from .receivers import Receivers
from .test_full_stack import condition, deployment, models, nothing_lost, ready, stack, start_traffic, status, until

__all__ = ["models", "stack"]  # the fixtures, shared with the full-stack tests

pytestmark = pytest.mark.cluster

INTERVAL, FOR = "5s", 2
HOLD_AT_HALF = {"type": "canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
LENIENT = [
    # The rollout's own test may not decide here: no error rate can exceed 11x stable + 50 points.
    {"name": "error-rate", "builtin": "errorRate", "failureMargin": 10, "failureMarginAbsolute": 0.5}
]


@pytest.fixture(scope="module")
def receivers() -> Iterator[Receivers]:
    running = Receivers().start()
    yield running
    running.stop()


def canary(stack: Stack, name: str, version: str, model: Path) -> dict[str, Any]:
    doc = deployment(stack, name, version, model, HOLD_AT_HALF)
    doc["spec"]["analysis"]["metrics"] = copy.deepcopy(LENIENT)
    return doc


def regression_rule(stack: Stack, name: str, target: str, receivers: Receivers, **spec: Any) -> dict[str, Any]:
    """The candidate's error rate over 1.5x stable's for 2 evaluations 5 s apart: page and roll back."""
    return {
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "AlertRule",
        "metadata": {"name": name, "namespace": stack.namespace},
        "spec": {
            "target": {"name": target},
            "metric": {"builtin": "errorRate", "window": "20s"},
            "condition": {"operator": ">", "threshold": 1.5, "relativeTo": "stable"},
            "interval": INTERVAL,
            "for": FOR,
            "severity": "critical",
            "grouping": {"by": ["model", "severity"], "wait": "0s"},
            "notifications": [
                {"type": "webhook", "url": receivers.url(f"/hooks/{name}")},
                {"type": "slack", "urlSecretRef": {"name": "slack-webhooks", "key": name}},
            ],
            "action": "rollback",
            **spec,
        },
    }


def rule_status(stack: Stack, name: str) -> dict[str, Any]:
    found: dict[str, Any] = stack.kube.json("get", "alertrule", name, "-n", stack.namespace).get("status") or {}
    return found


def test_a_worse_candidate_fires_notifies_rolls_back_and_resolves_but_not_in_a_window(
    stack: Stack, models: dict[str, Path], receivers: Receivers
) -> None:
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    stack.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "slack-webhooks", "namespace": stack.namespace},
            "stringData": {name: receivers.url(f"/slack/{name}") for name in ("regression", "quiet")},
        }
    )
    for name in ("paged", "quiet"):
        stack.apply(canary(stack, name, "v1", models["v1"]))
    stable = {
        name: status(until(stack, name, ready, 120, f"{name} v1 Ready"))["stableRevision"]
        for name in ("paged", "quiet")
    }
    traffic = [start_traffic(stack, name) for name in ("paged", "quiet")]
    stack.apply(
        regression_rule(stack, "regression", "paged", receivers),
        regression_rule(stack, "quiet", "quiet", receivers, maintenanceWindows=[window]),
    )
    for name in ("paged", "quiet"):
        stack.apply(canary(stack, name, "v2", models["bad"]))
    candidate = status(
        until(stack, "paged", lambda m: bool(status(m).get("candidateRevision")), 60, "the paged candidate")
    )["candidateRevision"]

    # Each evaluation of the rule, as status shows it: (state, violations) of the candidate's instance.
    seen: dict[str, tuple[str, int]] = {}

    def fired() -> bool:
        now_status = rule_status(stack, "regression")
        mine = [i for i in now_status.get("instances") or [] if i["revision"] == candidate]
        if mine and now_status.get("lastEvaluatedAt"):
            seen[now_status["lastEvaluatedAt"]] = (mine[0]["state"], mine[0]["violations"])
        return bool(mine) and mine[0]["state"] == "Firing"

    wait_until(fired, 180, "the regression rule to fire", 0.2, detail=lambda: str(rule_status(stack, "regression")))
    history = [seen[at] for at in sorted(seen)]
    first = next(i for i, (state, _) in enumerate(history) if state == "Firing")
    assert history[first] == ("Firing", FOR), history
    assert history[first - 1] == ("Pending", FOR - 1), history  # the evaluation before: one violation

    # The action: the rollout is rolled back, by the AlertRule, with the reason in status.
    md = until(stack, "paged", lambda m: condition(m, "RolledBack") == "True", 60, "the rollback by the alert")
    assert status(md)["stableRevision"] == stable["paged"] and not status(md).get("candidateRevision")
    [request] = [r for r in status(md).get("handledRequests") or [] if r["by"] == "AlertRule/regression"]
    assert request["action"] == "rollback" and stable["paged"] in request["result"], request
    assert "regression" in status(md)["message"] and "errorRate" in status(md)["message"], status(md)["message"]

    # The alert resolves: its candidate is gone, and each receiver gets the resolved message.
    def resolved(path: str) -> list[dict[str, Any]] | None:
        bodies = receivers.bodies(path)
        return bodies if len(bodies) >= 2 else None

    hook = wait_until(lambda: resolved("/hooks/regression"), 60, "the resolved webhook message")
    slack = wait_until(lambda: resolved("/slack/regression"), 60, "the resolved Slack message")
    assert [b["state"] for b in hook] == ["firing", "resolved"], hook
    firing = hook[0]
    assert firing["rule"] == f"{stack.namespace}/regression" and firing["severity"] == "critical"
    assert firing["groupLabels"] == {"model": "paged", "severity": "critical"}
    assert firing["action"] == "rollback" and hook[1]["dedupeKey"] == firing["dedupeKey"]
    [instance] = firing["instances"]
    assert (instance["revision"], instance["role"], instance["state"]) == (candidate, "candidate", "Firing")
    assert instance["violations"] == FOR and instance["value"] > 1.5, instance
    assert [i["revision"] for i in hook[1]["instances"]] == [candidate]
    assert [b["text"].split()[1] for b in slack] == ["[FIRING]", "[RESOLVED]"], slack
    assert candidate in str(slack[0]["blocks"]) and "action: rollback" in str(slack[0]["blocks"])
    wait_until(lambda: rule_status(stack, "regression").get("state") == "Inactive", 30, "the rule back to Inactive")
    assert rule_status(stack, "regression")["deliveries"]["sent"] == 4  # 2 messages x 2 receivers

    # The same rule inside a maintenance window: Silenced past `for`, no message, no action.
    def silenced_past_for() -> dict[str, Any] | None:
        quiet = rule_status(stack, "quiet")
        instances = quiet.get("instances") or []
        past = instances and instances[0]["state"] == "Silenced" and instances[0]["violations"] > FOR
        return quiet if past else None

    quiet = wait_until(silenced_past_for, 120, "the quiet rule silenced past `for`", 0.5)
    assert quiet["state"] == "Silenced" and quiet["firing"] == 0, quiet
    md = stack.md("quiet")
    assert status(md).get("candidateRevision") and condition(md, "RolledBack") != "True", status(md)
    assert not [r for r in status(md).get("handledRequests") or [] if r["by"] == "AlertRule/quiet"]
    assert receivers.bodies("/hooks/quiet") == [] and receivers.bodies("/slack/quiet") == []
    assert stable["quiet"] != status(md)["candidateRevision"]
    for running in traffic:
        nothing_lost(running)
