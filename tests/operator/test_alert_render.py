"""AlertRules rendered as PrometheusRules (operator/alerts/render.py), judged by Prometheus' own
promtool: every rendered group passes ``promtool check rules``, and ``promtool test rules`` shows
that the rendered rule fires at exactly the evaluation cutover's instance machine fires at, for
the same input series, while the evaluator's own per-revision query reads the values the
machine is fed."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cutover.api import contract
from cutover.api.contract import (
    GATEWAY_REQUESTS,
    REVISION_ROLE,
    SAFETY_CHECKS,
    SAFETY_VIOLATIONS,
    SERVING_REQUESTS,
    Series,
)
from cutover.api.v1alpha1 import AlertRule, ModelDeployment
from cutover.operator.alerts import instances
from cutover.operator.alerts.evaluator import metric_query, ratio
from cutover.operator.alerts.queries import BUILTINS, matchers
from cutover.operator.alerts.render import prometheus_rule, rule_group

from ..cases import load

NAMESPACE, MODEL = "payments", "fraud-scorer"
STABLE, CANDIDATE = "5f7c9d", "a1b2c3"
SCRAPE = 16  # seconds between the samples of the input series (rates over 64 s are exact)
T0 = datetime(2026, 11, 22, tzinfo=UTC)


def promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed (hack/system-deps installs Debian's prometheus, which ships it)"
    return binary


def target(provider: str = "gateway", name: str = MODEL) -> ModelDeployment:
    doc = copy.deepcopy(load("modeldeployment-canary.yaml"))
    doc["metadata"] |= {"name": name, "namespace": NAMESPACE}
    doc["spec"]["model"]["name"] = name
    doc["spec"]["traffic"] = {"provider": provider}
    doc["status"] = {
        "stableRevision": STABLE,
        "candidateRevision": CANDIDATE,
        "traffic": [
            {"revision": STABLE, "role": "stable", "weight": 80},
            {"revision": CANDIDATE, "role": "candidate", "weight": 20},
        ],
    }
    return ModelDeployment.model_validate(doc)


def alert_rule(metric: dict[str, Any], condition: dict[str, Any], **spec: Any) -> AlertRule:
    body = {
        "metadata": {"name": "fraud-alert", "namespace": NAMESPACE, "uid": "0b5e7a1e-0000-4000-8000-000000000001"},
        "spec": {"target": {"name": MODEL}, "metric": metric, "condition": condition} | spec,
    }
    return AlertRule.model_validate(body)


ERRORS_TEMPLATE = (
    'sum(rate(cutover_serving_requests_total{namespace="{{namespace}}",model="{{model}}",'
    'revision="{{revision}}",code=~"5.."}[{{window}}]))'
)


def every_rule() -> list[AlertRule]:
    """Every builtin absolute and relative to stable, and templates both ways."""
    rules = []
    for builtin in BUILTINS:
        rules.append(alert_rule({"builtin": builtin}, {"operator": ">", "threshold": 0.5}))
        rules.append(
            alert_rule(
                {"builtin": builtin, "window": "90s"},
                {"operator": "<=", "threshold": 0.8, "relativeTo": "stable"},
                **{"for": 1},
            )
        )
    for relative in ("absolute", "stable"):
        metric = {"query": ERRORS_TEMPLATE, "window": "2m"}
        rules.append(
            alert_rule(metric, {"operator": ">=", "threshold": 1.5e-3, "relativeTo": relative}, interval="1500ms")
        )
    return rules


def check_rules(groups: Sequence[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    files = []
    for i, group in enumerate(groups):
        path = tmp_path / f"group-{i}.yaml"
        path.write_text(yaml.safe_dump({"groups": [group]}))
        files.append(str(path))
    return subprocess.run([promtool(), "check", "rules", *files], capture_output=True, text=True)


def test_every_rendered_group_passes_promtool_check_rules(tmp_path: Path) -> None:
    targets = [target("gateway"), target("replicas", name="fraud-scorer-b")]
    groups = [rule_group(rule, targets) for rule in every_rule()]
    done = check_rules(groups, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr, "promtool lints nothing (no duplicate rules)"
    # A builtin: one rule per target; a template: one per live revision (relative: not stable).
    assert [len(g["rules"]) for g in groups] == [2] * (2 * len(BUILTINS)) + [4, 2]


def test_promtool_rejects_what_it_should(tmp_path: Path) -> None:
    """The check above can fail: a rendered group with a broken expression does not pass."""
    group = rule_group(every_rule()[0], [target()])
    group["rules"][0]["expr"] = group["rules"][0]["expr"].replace(")", "", 1)
    assert check_rules([group], tmp_path).returncode != 0


def test_the_rendered_object_is_owned_by_the_alert_rule_and_labelled_for_people() -> None:
    rule = alert_rule({"builtin": "errorRate"}, {"operator": ">", "threshold": 0.01}, severity="critical", **{"for": 4})
    rendered = prometheus_rule(rule, [target("gateway"), target("replicas", name="fraud-scorer-b")])
    assert rendered["apiVersion"] == "monitoring.coreos.com/v1" and rendered["kind"] == "PrometheusRule"
    meta = rendered["metadata"]
    assert (meta["name"], meta["namespace"]) == ("fraud-alert", NAMESPACE)
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "cutover.dev/v1alpha1",
            "kind": "AlertRule",
            "name": "fraud-alert",
            "uid": rule.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    (group,) = rendered["spec"]["groups"]
    assert group["interval"] == "30s"
    gateway, serving = group["rules"]
    assert gateway["for"] == "90s", "4 evaluations in a row, 30 s apart: the first starts Pending"
    assert GATEWAY_REQUESTS.sample in gateway["expr"] and SERVING_REQUESTS.sample not in gateway["expr"]
    assert SERVING_REQUESTS.sample in serving["expr"] and GATEWAY_REQUESTS.sample not in serving["expr"]
    assert REVISION_ROLE.sample in gateway["expr"], "only live revisions, each with its role"
    assert gateway["labels"] == {"severity": "critical", "alertrule": "fraud-alert", "modeldeployment": MODEL}
    annotations = gateway["annotations"]
    assert annotations["runbook_url"].endswith("#error-rate")
    assert "error rate > 1%" in annotations["summary"] and "{{ $labels.revision }}" in annotations["summary"]
    assert "humanizePercentage" in annotations["description"]


def test_a_rule_fires_at_once_when_for_is_one_and_without_an_owner_before_it_has_a_uid() -> None:
    rule = alert_rule({"builtin": "requestRate"}, {"operator": "<", "threshold": 1.0}, **{"for": 1})
    rendered = prometheus_rule(
        rule.model_copy(update={"metadata": rule.metadata.model_copy(update={"uid": None})}), [target()]
    )
    assert "ownerReferences" not in rendered["metadata"]
    assert "for" not in rendered["spec"]["groups"][0]["rules"][0]


# ---- promtool test rules: the same evaluation as the instance machine -----------------------


@dataclass
class Scenario:
    """Input series as per-scrape increments of counters; the rule under test; what the
    evaluator reads per revision."""

    rule: AlertRule
    md: ModelDeployment
    counters: dict[str, Callable[[int], float]]
    """Series text (name and labels) -> its increment at scrape ``k`` (k >= 1)."""
    value: Callable[[str, int], float | None]
    """The value of the evaluator's query for a revision at time ``t`` seconds."""
    evaluations: int = 30


def cumulative(increment: Callable[[int], float], scrapes: int) -> list[float]:
    values, total = [], 0.0
    for k in range(scrapes + 1):
        total += increment(k) if k else 0.0
        values.append(total)
    return values


def requests(revision: str, code: str) -> str:
    labels = f'namespace="{NAMESPACE}",model="{MODEL}",revision="{revision}",role="x",code="{code}"'
    return f"{GATEWAY_REQUESTS.sample}{{{labels}}}"


def serving(revision: str, code: str) -> str:
    return f'{SERVING_REQUESTS.sample}{{namespace="{NAMESPACE}",model="{MODEL}",revision="{revision}",code="{code}"}}'


def windowed(series: Callable[[int], float], t: int, window: int) -> float:
    """What one counter grows by over (t - window, t], its samples every SCRAPE seconds: the
    windows here hold samples at both ends, so Prometheus' rate() is exactly this / window."""
    return sum(series(k) for k in range(t // SCRAPE - window // SCRAPE + 1, t // SCRAPE + 1) if k >= 1)


def machine_firing_at(scenario: Scenario, revision: str, role: str) -> int | None:
    """Seconds at which cutover's instance machine first shows ``revision`` Firing, feeding it
    the evaluator's value at every evaluation (one per ``interval`` from time 0)."""
    spec = scenario.rule.spec
    interval = int(spec.interval.removesuffix("s"))
    instance = instances.inactive(f"{NAMESPACE}/{MODEL}", MODEL, revision, role, spec.condition.threshold)
    for i in range(scenario.evaluations):
        t = i * interval
        # At time 0 each counter has one sample: no rate yet, no data (the state stays).
        value = scenario.value(revision, t) if t >= SCRAPE else None
        seen = instances.Observation(instance.target, MODEL, revision, role, value)
        instance = instances.step(
            instance, seen, operator=spec.condition.operator, for_=spec.for_, now=T0 + timedelta(seconds=t)
        )
        if instance.state == "Firing":
            return t
    return None


def promtool_test(scenario: Scenario, checks: list[tuple[int, str, list[dict[str, Any]]]], tmp: Path) -> str:
    """Run ``promtool test rules`` with the scenario's series and the rendered group (without its
    annotations, whose text depends on the value); ``checks`` are (time, revision for the
    evaluator's query, expected alerts); returns promtool's output."""
    rendered = rule_group(scenario.rule, [scenario.md])
    for alert in rendered["rules"]:
        alert.pop("annotations")
    (tmp / "rules.yaml").write_text(yaml.safe_dump({"groups": [rendered]}))
    scrapes = scenario.evaluations * int(scenario.rule.spec.interval.removesuffix("s")) // SCRAPE + 1
    series = [
        {"series": name, "values": " ".join(f"{v:g}" for v in cumulative(inc, scrapes))}
        for name, inc in scenario.counters.items()
    ]
    for revision, role in ((STABLE, "stable"), (CANDIDATE, "candidate")):
        labels = f'namespace="{NAMESPACE}",model="{MODEL}",revision="{revision}",role="{role}"'
        series.append({"series": f'{REVISION_ROLE.sample}{{{labels},instance="operator-0"}}', "values": f"1x{scrapes}"})
    alert_tests, expr_tests = [], []
    for t, revision, expected in checks:
        alert_tests.append({"eval_time": f"{t}s", "alertname": scenario.rule.metadata.name, "exp_alerts": expected})
        value = scenario.value(revision, t)
        assert value is not None
        expr_tests.append(
            {
                "expr": metric_query(scenario.rule.spec.metric, scenario.md, revision),
                "eval_time": f"{t}s",
                "exp_samples": [{"labels": "{}", "value": value}],
            }
        )
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": scenario.rule.spec.interval,
        "tests": [
            {
                "interval": f"{SCRAPE}s",
                "input_series": series,
                "alert_rule_test": alert_tests,
                "promql_expr_test": expr_tests,
            }
        ],
    }
    (tmp / "test.yaml").write_text(yaml.safe_dump(test))
    done = subprocess.run([promtool(), "test", "rules", "test.yaml"], cwd=tmp, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def firing(scenario: Scenario, revision: str, role: str) -> list[dict[str, Any]]:
    spec = scenario.rule.spec
    labels = {
        "alertrule": scenario.rule.metadata.name,
        "modeldeployment": MODEL,
        "severity": spec.severity,
        "namespace": NAMESPACE,
        "model": MODEL,
        "revision": revision,
        "role": role,
    }
    return [{"exp_labels": labels}]


def check_fires_with_the_machine(scenario: Scenario, revision: str, role: str, tmp: Path) -> int:
    """promtool agrees with the machine: no alert one evaluation before the machine fires,
    the alert at that evaluation and the next. Returns the time it fires."""
    at = machine_firing_at(scenario, revision, role)
    assert at is not None, "the scenario makes the machine fire"
    interval = int(scenario.rule.spec.interval.removesuffix("s"))
    checks = [(at - interval, revision, []), (at, revision, firing(scenario, revision, role))]
    checks.append((at + interval, revision, firing(scenario, revision, role)))
    promtool_test(scenario, checks, tmp)
    return at


def errors_from(start: int, per_scrape: float) -> Callable[[int], float]:
    return lambda k: per_scrape if k * SCRAPE > start else 0.0


def steady(per_scrape: float) -> Callable[[int], float]:
    return lambda k: per_scrape


def rate(counters: dict[str, Callable[[int], float]], names: Sequence[str], t: int, window: int) -> float:
    """Prometheus' ``sum(rate(...[window]))`` of ``names`` at ``t``: each rate is a whole number
    over a power of two, so the sum is exact and equals PromQL's to the last bit."""
    return sum(windowed(counters[name], t, window) / window for name in names)


@pytest.mark.parametrize("for_", [1, 3, 5])
def test_absolute_error_rate_fires_at_the_machines_evaluation(for_: int, tmp_path: Path) -> None:
    """The candidate answers 10% errors after 320 s; the stable revision never errs."""
    rule = alert_rule(
        {"builtin": "errorRate", "window": "64s"}, {"operator": ">", "threshold": 0.06}, interval="32s", **{"for": for_}
    )
    counters = {
        requests(STABLE, "200"): steady(10),
        requests(CANDIDATE, "200"): lambda k: 10 - errors_from(320, 1)(k),
        requests(CANDIDATE, "500"): errors_from(320, 1),
    }

    def value(revision: str, t: int) -> float | None:
        if revision == STABLE:
            return 0.0
        everything = rate(counters, [requests(CANDIDATE, "200"), requests(CANDIDATE, "500")], t, 64)
        return rate(counters, [requests(CANDIDATE, "500")], t, 64) / everything

    scenario = Scenario(rule, target("gateway"), counters, value)
    at = check_fires_with_the_machine(scenario, CANDIDATE, "candidate", tmp_path)
    # At 352 s the window holds 2 errors of 40 (5%), at 384 s 4 (10% > 6%); then `for` evaluations.
    assert at == 384 + (for_ - 1) * 32
    assert machine_firing_at(scenario, STABLE, "stable") is None


def test_relative_to_stable_fires_with_the_machine_and_reads_the_ratio(tmp_path: Path) -> None:
    """Stable answers 1% errors throughout, the candidate 3% after 640 s (counted by the pods:
    provider replicas reads the serving series): 2x stable > 1.6x fires after 3 evaluations."""
    rule = alert_rule(
        {"builtin": "errorRate", "window": "128s"},
        {"operator": ">", "threshold": 1.6, "relativeTo": "stable"},
        interval="32s",
        **{"for": 3},
    )
    counters = {
        serving(STABLE, "200"): steady(99),
        serving(STABLE, "503"): steady(1),
        serving(CANDIDATE, "200"): lambda k: 97 if k * SCRAPE > 640 else 99,
        serving(CANDIDATE, "503"): lambda k: 3 if k * SCRAPE > 640 else 1,
    }

    def value(revision: str, t: int) -> float | None:
        errors = rate(counters, [serving(revision, "503")], t, 128)
        return errors / rate(counters, [serving(revision, "200"), serving(revision, "503")], t, 128)

    md = target("replicas")
    relative = Scenario(rule, md, counters, lambda r, t: ratio(value(r, t) or 0, value(STABLE, t) or 0), evaluations=40)
    at = machine_firing_at(relative, CANDIDATE, "candidate")
    # At 672 s the window holds 2 of its 8 scrapes at 3% (1.5x), at 704 s 4 (2x > 1.6x).
    assert at == 704 + 2 * 32
    checks = [(at - 32, CANDIDATE, []), (at, CANDIDATE, firing(relative, CANDIDATE, "candidate"))]
    promtool_test(Scenario(rule, md, counters, value, evaluations=40), checks, tmp_path)


def test_relative_with_a_stable_revision_at_zero_reads_as_the_evaluator(tmp_path: Path) -> None:
    """Stable has no errors: the evaluator's ratio is 1 while the candidate has none either
    (0/0 in PromQL is NaN: the rendered rule fills in 1, so ``<= 1`` holds from the first
    evaluation with data) and infinite once it has some (``> 1.5`` fires)."""
    counters = {
        requests(STABLE, "200"): steady(10),
        requests(CANDIDATE, "200"): steady(10),
        requests(CANDIDATE, "500"): errors_from(640, 1),
    }

    def value(revision: str, t: int) -> float | None:
        if revision == STABLE:
            return 0.0
        errors = rate(counters, [requests(CANDIDATE, "500")], t, 64)
        return errors / rate(counters, [requests(CANDIDATE, "200"), requests(CANDIDATE, "500")], t, 64)

    def relative(revision: str, t: int) -> float | None:
        return ratio(value(revision, t) or 0, value(STABLE, t) or 0)

    metric = {"builtin": "errorRate", "window": "64s"}
    md = target("gateway")
    for condition, starts in (({"operator": "<=", "threshold": 1}, 32), ({"operator": ">", "threshold": 1.5}, 672)):
        rule = alert_rule(metric, condition | {"relativeTo": "stable"}, interval="32s", **{"for": 2})
        scenario = Scenario(rule, md, counters, relative)
        at = machine_firing_at(scenario, CANDIDATE, "candidate")
        assert at == starts + 32, "from the first violating evaluation, 2 in a row"
        checks = [(starts, CANDIDATE, []), (at, CANDIDATE, firing(scenario, CANDIDATE, "candidate"))]
        promtool_test(Scenario(rule, md, counters, value), checks, tmp_path)


@pytest.mark.parametrize("relative_to", ["absolute", "stable"])
def test_a_query_template_fires_with_the_machine(relative_to: str, tmp_path: Path) -> None:
    """A template is filled per revision exactly as the evaluator fills it."""
    threshold = 0.1 if relative_to == "absolute" else 2.0
    rule = alert_rule(
        {"query": ERRORS_TEMPLATE, "window": "64s"},
        {"operator": ">", "threshold": threshold, "relativeTo": relative_to},
        interval="32s",
        **{"for": 4},
    )
    counters = {
        serving(STABLE, "200"): steady(99),
        serving(STABLE, "500"): steady(1),
        serving(CANDIDATE, "200"): steady(99),
        serving(CANDIDATE, "500"): lambda k: 4 if k * SCRAPE > 448 else 1,
    }

    def value(revision: str, t: int) -> float | None:
        return rate(counters, [serving(revision, "500")], t, 64)

    def relative(revision: str, t: int) -> float | None:
        return ratio(value(revision, t) or 0, value(STABLE, t) or 0)

    md = target("replicas")
    judged = Scenario(rule, md, counters, value if relative_to == "absolute" else relative)
    at = machine_firing_at(judged, CANDIDATE, "candidate")
    # At 480 s the window holds 2 scrapes at 4 errors (10/64 > 0.1; 2.5x stable > 2x), then 4 in a row.
    assert at == 480 + 3 * 32
    checks = [(at - 32, CANDIDATE, []), (at, CANDIDATE, firing(judged, CANDIDATE, "candidate"))]
    promtool_test(Scenario(rule, md, counters, value), checks, tmp_path)


def safety(series: Series, revision: str, scope: str, **labels: str) -> str:
    where = {"namespace": NAMESPACE, "model": MODEL, "revision": revision, "filter": "toxicity", "scope": scope}
    return f"{series.sample}{{{matchers(where | labels)}}}"


def test_safety_violation_rate_fires_on_answers_not_on_what_users_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each revision's toxicity filter checks 10 answers and 10 prompts a scrape. Stable's users
    turn abusive (8 of 10 prompts flagged) while its answers stay clean: no alert. The
    candidate's answers go bad after 320 s (3 of 10 flagged, over the 5% threshold): it fires
    when the evaluator's value does, and the value is output violations over output checks."""
    exported = {SAFETY_VIOLATIONS, SAFETY_CHECKS}  # as serving registers them
    monkeypatch.setattr(
        contract, "SERIES", tuple(replace(s, exported_by=("serving",)) if s in exported else s for s in contract.SERIES)
    )
    rule = alert_rule(
        {"builtin": "safetyViolationRate", "window": "64s"},
        {"operator": ">", "threshold": 0.05},
        interval="32s",
        **{"for": 2},
    )
    flagged = {"category": "toxicity", "action": "flag"}
    counters = {
        safety(SAFETY_CHECKS, STABLE, "output"): steady(10),
        safety(SAFETY_VIOLATIONS, STABLE, "output", **flagged): steady(0),
        safety(SAFETY_CHECKS, STABLE, "input"): steady(10),
        safety(SAFETY_VIOLATIONS, STABLE, "input", **flagged): steady(8),
        safety(SAFETY_CHECKS, CANDIDATE, "output"): steady(10),
        safety(SAFETY_VIOLATIONS, CANDIDATE, "output", **flagged): errors_from(320, 3),
        safety(SAFETY_CHECKS, CANDIDATE, "input"): steady(10),
        safety(SAFETY_VIOLATIONS, CANDIDATE, "input", **flagged): steady(0),
    }

    def value(revision: str, t: int) -> float | None:
        violations = rate(counters, [safety(SAFETY_VIOLATIONS, revision, "output", **flagged)], t, 64)
        return violations / rate(counters, [safety(SAFETY_CHECKS, revision, "output")], t, 64)

    scenario = Scenario(rule, target("gateway"), counters, value)
    at = check_fires_with_the_machine(scenario, CANDIDATE, "candidate", tmp_path)
    assert at == 352 + 32, "the window holds one bad scrape at 352 s (3/40 > 5%), then for = 2"
    assert machine_firing_at(scenario, STABLE, "stable") is None
    # The rendered rule agrees: at that evaluation only the candidate fires, and stable's value
    # (the evaluator's query) is 0, its users' flagged prompts left out.
    promtool_test(scenario, [(at, STABLE, firing(scenario, CANDIDATE, "candidate"))], tmp_path)
