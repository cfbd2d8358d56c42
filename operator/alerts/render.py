"""An AlertRule as a Prometheus Operator ``PrometheusRule``: pure, no I/O.

cutover evaluates every AlertRule itself; where the PrometheusRule CRD exists the handler also
applies :func:`prometheus_rule`, so the alert shows in Prometheus and Alertmanager like any other.
The rendered rule fires at the same evaluation as cutover's instance machine
(:mod:`.instances`) for the same series:

- One rule group per AlertRule (``interval`` = ``spec.interval``), owned by the AlertRule, so it
  goes with it; one alerting rule per target ModelDeployment (a builtin metric: every revision
  at once, one series each) or per target revision (a ``query`` template, whose ``{{revision}}``
  is filled in like the evaluator fills it).
- The value is the builtin's PromQL of :mod:`.queries`, the very text the evaluator sends for one
  revision, summed by ``namespace, model, revision`` instead. It is joined on the operator's
  role series (``cutover_revision_role``, :data:`cutover.api.contract.REVISION_ROLE`) so only
  live revisions count and each alert carries its ``role``; relative to stable, every other live
  revision's value is divided by the stable revision's (``/ on(namespace, model)``). Where the
  evaluator's ratio is 1 (both values 0), PromQL's 0/0 is NaN: the expression fills in 1.
- ``for`` is ``(for - 1) x interval``: Prometheus holds an alert Pending from the first
  evaluation that returns it and fires once ``for`` has passed since, so ``for`` violating
  evaluations in a row fire at the ``for``-th one, as cutover's instance does. A value that is
  gone or NaN is where the two differ: cutover freezes the instance (no data is not a recovery),
  Prometheus drops a Pending alert and resolves a Firing one.
- Labels ``severity``, ``alertrule``, ``modeldeployment`` and, from the series (or written in
  for a template), ``namespace``, ``model``, ``revision``, ``role``; annotations ``summary``,
  ``description`` and ``runbook_url`` (:func:`.notify.runbook_url`, as the notifications link).

Alert names are the AlertRule's name. kube-prometheus-stack loads only PrometheusRules whose
labels match its ``ruleSelector`` (by default ``release: <its release>``): such labels are the
Prometheus installation's business, not cutover's, and are not added here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cutover.api.contract import LABEL_MANAGED_BY, MANAGER, REVISION_ROLE, duration_text
from cutover.api.v1alpha1 import AlertRule, ModelDeployment, seconds
from cutover.api.v1alpha1.alertrule import AlertRuleSpec

from .evaluator import QueryInvalid, live_revisions, metric_query
from .notify import runbook_url
from .queries import BY_REVISION, builtin_query, matchers, request_source

API_VERSION = "monitoring.coreos.com/v1"
KIND = "PrometheusRule"
_JOIN = "on (namespace, model, revision)"
_PERCENT = frozenset({"errorRate", "outOfDistributionRate", "safetyViolationRate", "accuracy"})
_NAMES = {
    "errorRate": "error rate",
    "latencyP50": "p50 latency",
    "latencyP99": "p99 latency",
    "predictionConfidence": "mean prediction confidence",
    "outOfDistributionRate": "out-of-distribution rate",
    "safetyViolationRate": "safety violation rate",
    "requestRate": "request rate",
    "accuracy": "accuracy on fed-back answers",
    "calibrationError": "expected calibration error",
    "inputDrift": "largest input drift (PSI) of a feature",
}


def prometheus_rule(rule: AlertRule, targets: Sequence[ModelDeployment]) -> dict[str, Any]:
    """The ``monitoring.coreos.com/v1`` PrometheusRule for ``rule`` over ``targets`` (the
    ModelDeployments its ``target`` selects now, with their status): same name and namespace as
    the AlertRule, owned by it (when it has a uid), one group (:func:`rule_group`)."""
    meta = rule.metadata
    metadata: dict[str, Any] = {
        "name": meta.name,
        "namespace": meta.namespace,
        "labels": {LABEL_MANAGED_BY: MANAGER},
    }
    if meta.uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": rule.api_version,
                "kind": rule.kind,
                "name": meta.name,
                "uid": meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {"groups": [rule_group(rule, targets)]},
    }


def rule_group(rule: AlertRule, targets: Sequence[ModelDeployment]) -> dict[str, Any]:
    """The rule group (what ``promtool check rules`` reads under ``groups:``): evaluated every
    ``spec.interval``, one alerting rule per target (or per target revision for a ``query``).

    Raises:
        ValueError: a ``query`` template names an unknown variable.
    """
    rules = [alert for md in targets for alert in alerting_rules(rule, md)]
    return {
        "name": f"alertrule/{rule.metadata.name}",
        "interval": _duration(seconds(rule.spec.interval)),
        "rules": rules,
    }


def alerting_rules(rule: AlertRule, md: ModelDeployment) -> list[dict[str, Any]]:
    """The alerting rules of ``rule`` for one target ``md``: one for a builtin metric, one per
    live revision for a ``query`` (relative to stable: per revision other than stable, none
    while ``md`` has no stable revision).

    Raises:
        ValueError: a ``query`` template names an unknown variable.
    """
    spec = rule.spec
    labels = {
        "severity": spec.severity,
        "alertrule": rule.metadata.name or "",
        "modeldeployment": md.metadata.name or "",
    }
    if spec.metric.builtin is not None:
        return [_alert(rule, md, _builtin_expr(spec, md), labels, "{{ $labels.revision }} ({{ $labels.role }})")]
    revisions = live_revisions(md)
    stable = next((revision for revision, role in revisions if role == "stable"), None)
    relative = spec.condition.relative_to == "stable"
    out = []
    for revision, role in revisions:
        if relative and (stable is None or revision == stable):
            continue
        value = _template(rule, md, revision)
        if relative:
            assert stable is not None
            value = _scalar_ratio(value, _template(rule, md, stable))
        named = labels | {"namespace": md.metadata.namespace or "", "model": md.spec.model.name}
        named |= {"revision": revision, "role": role}
        out.append(_alert(rule, md, _compare(value, spec), named, f"{revision} ({role})"))
    return out


def _alert(rule: AlertRule, md: ModelDeployment, expr: str, labels: dict[str, str], revision: str) -> dict[str, Any]:
    spec = rule.spec
    interval = seconds(spec.interval)
    what = f"{_metric_name(spec)} {spec.condition.operator} {_threshold_text(spec)}"
    annotations = {
        "summary": f"{rule.metadata.name}: {what} on {md.metadata.namespace}/{md.metadata.name} revision {revision}",
        "description": (
            f"The {_metric_name(spec)} over {spec.metric.window} is {_value_text(spec)}, {what}, at "
            f"{spec.for_} evaluation(s) in a row {_duration(interval)} apart. cutover's AlertRule "
            f"{md.metadata.namespace}/{rule.metadata.name} takes action {spec.action}."
        ),
    }
    link = runbook_url(rule)
    if link:
        annotations["runbook_url"] = link
    alert: dict[str, Any] = {"alert": rule.metadata.name, "expr": expr}
    if spec.for_ > 1:
        alert["for"] = _duration((spec.for_ - 1) * interval)
    return alert | {"labels": labels, "annotations": annotations}


def _builtin_expr(spec: AlertRuleSpec, md: ModelDeployment) -> str:
    """One series per live revision of ``md`` (role attached), compared with the threshold."""
    assert spec.metric.builtin is not None
    target = {"namespace": md.metadata.namespace or "", "model": md.spec.model.name}
    window = _duration(seconds(spec.metric.window))
    value = builtin_query(spec.metric.builtin, request_source(md), target, window, BY_REVISION)
    roles = REVISION_ROLE.sample
    if spec.condition.relative_to != "stable":
        live = f"max by (namespace, model, revision, role) ({roles}{{{matchers(target)}}})"
        return _compare(f"{value} * {_JOIN} group_left (role) {live}", spec)
    others = f'max by (namespace, model, revision, role) ({roles}{{{matchers(target)},role!="stable"}})'
    stable = f'max by (namespace, model, revision) ({roles}{{{matchers(target)},role="stable"}})'
    candidate = f"({value} * {_JOIN} group_left (role) {others})"
    base = f"({value} * {_JOIN} group_left () {stable})"
    ratio = f"{candidate} / on (namespace, model) group_left () {base}"
    both_zero = f"({candidate} == 0) + on (namespace, model) group_left () ({base} == 0) + 1"
    return _compare(f"({ratio} >= -Inf or {both_zero})", spec)


def _scalar_ratio(value: str, stable: str) -> str:
    """``value`` over the one value of ``stable`` (NaN unless it is one series, as the evaluator
    refuses several); 1 where both are 0, as the evaluator's ratio says."""
    ratio = f"({value}) / scalar({stable})"
    both_zero = f"(({value}) == 0) + 1 + 0 * (1 / (scalar({stable}) == bool 0))"
    return f"({ratio} >= -Inf or {both_zero} >= -Inf)"


def _template(rule: AlertRule, md: ModelDeployment, revision: str) -> str:
    """The ``query`` template filled for one revision, exactly as the evaluator fills it."""
    try:
        return metric_query(rule.spec.metric, md, revision)
    except QueryInvalid as err:
        raise ValueError(str(err)) from err


def _compare(value: str, spec: AlertRuleSpec) -> str:
    return f"{value} {spec.condition.operator} {spec.condition.threshold!r}"


def _duration(secs: float) -> str:
    """A Prometheus duration (``30s``, ``1500ms``); whole milliseconds, as the API's durations are."""
    text = duration_text(secs)
    if text is None:
        raise ValueError(f"{secs} s is not a whole number of milliseconds")
    return text


def _metric_name(spec: AlertRuleSpec) -> str:
    return _NAMES.get(spec.metric.builtin or "", "value of metric.query")


def _threshold_text(spec: AlertRuleSpec) -> str:
    threshold = spec.condition.threshold
    if spec.condition.relative_to == "stable":
        return f"{threshold:g}x the stable revision's"
    if spec.metric.builtin in _PERCENT:
        return f"{threshold * 100:g}%"
    if spec.metric.builtin in ("latencyP50", "latencyP99"):
        return f"{threshold * 1000:g} ms"
    return f"{threshold:g}"


def _value_text(spec: AlertRuleSpec) -> str:
    """The alert's value as a Go template of Prometheus' annotation language."""
    if spec.condition.relative_to == "stable":
        return '{{ printf "%.2f" $value }}x the stable revision\'s'
    if spec.metric.builtin in _PERCENT:
        return "{{ $value | humanizePercentage }}"
    if spec.metric.builtin in ("latencyP50", "latencyP99"):
        return "{{ $value | humanizeDuration }}"
    return "{{ $value | humanize }}"
