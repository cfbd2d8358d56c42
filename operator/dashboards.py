"""cutover's Grafana dashboards, generated in code with grafana-foundation-sdk (Grafana Labs'
builders, pinned to its Grafana 11.6 target in pyproject's dev extra), never written as JSON by hand.

- **executive**: availability, requests, the error budget left against an availability SLO,
  models live, rollouts in flight and their outcomes (promotions, rollbacks), verdicts acted on;
- **operations**: per ModelDeployment, its phase, candidate weight and the analysis' estimates
  with their confidence bounds and decision per metric; then stable and candidate side by side
  (left and right): requests by code, 5xx ratio, latency p50/p90/p99, requests in flight, batch
  queue depth and wait, rows per model call, fallbacks, circuit breakers, GPU utilisation; and the
  operator's own health (reconciles, errors, duration, leaders, watch restarts, analysis available);
- **safety**: SafetyPolicy violations by filter and category, the share of checked requests
  that violated, blocked requests, crisis escalations and their webhook deliveries, PII
  redactions, per revision side by side, filter latency, failures and the policy applied.

``make dashboards`` writes them to ``charts/cutover/dashboards/<name>.json``, which the chart
ships as ConfigMaps for the Grafana sidecar (``monitoring.dashboards``); a test regenerates them
and compares byte for byte, so the committed files are always this module's output.

Every panel queries the Prometheus picked by the ``datasource`` variable. The serving series know
no role, so the side-by-side panels join them on the operator's ``cutover_revision_role`` (one
series per live revision, labelled with its role), the contract's way to tell a candidate from
the stable revision; the operator must be scraped too. Run only by ``make dashboards`` and the
tests: nothing the operator runs imports this module, so its image does not need the SDK.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from cutover.api import contract

from .rollout import BASELINE_SUFFIX, reasons

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
NAMESPACE = 'namespace=~"$namespace"'
MODEL = f'{NAMESPACE},model=~"$model"'
"""The label matchers of every data-plane panel: the chosen namespaces and models."""
DEPLOYMENT = f'{NAMESPACE},name=~"$modeldeployment"'
"""The label matchers of the operator's per-ModelDeployment series (labelled ``name``)."""
ROLES = ("stable", "candidate")
"""The roles shown side by side, left and right."""
QUANTILES = (0.5, 0.9, 0.99)
FIVE_XX = 'code=~"5.."'

REQUESTS = contract.SERVING_REQUESTS.sample
DURATION = contract.SERVING_REQUEST_DURATION.name
FEEDBACK = contract.FEEDBACK.sample
BY_CONFIDENCE = contract.FEEDBACK_BY_CONFIDENCE.sample
CORRECT = 'outcome="correct"'
ROLE = contract.REVISION_ROLE.name
PHASE = "cutover_rollout_phase"
WEIGHT = "cutover_rollout_candidate_weight"
SAFETY_VIOLATIONS = contract.SAFETY_VIOLATIONS.sample
SAFETY_CHECKS = contract.SAFETY_CHECKS.sample
ROLLBACKS = (
    reasons.ANALYSIS_FAILED,
    reasons.ANALYSIS_TIMEOUT,
    reasons.PROGRESS_DEADLINE_EXCEEDED,
    reasons.SHADOW_DISAGREEMENT,
    reasons.ABORTED,
    reasons.ROLLED_BACK_BY_REQUEST,
    reasons.ROLLED_BACK_BY_ALERT,
)
"""The transition reasons (operator/metrics.py counts them) that take a candidate back."""

Panel = dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel


def query(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    """A PromQL target on the ``datasource`` variable, ``legend`` in Grafana's ``{{label}}`` form."""
    target = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        target = target.legend_format(legend)
    return target.instant() if instant else target.range()


def series(title: str, description: str, unit: str, *targets: prometheus.Dataquery, width: int = 12) -> Panel:
    """A time series panel, 8 rows high and ``width`` of the 24 grid columns wide."""
    panel = timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
    for i, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    return panel.height(8).span(width)


def single(title: str, description: str, unit: str, target: prometheus.Dataquery, width: int = 6) -> Panel:
    """A stat panel showing the last value of ``target``."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .with_target(target.ref_id("A"))
        .height(4)
        .span(width)
    )


def listing(title: str, description: str, target: prometheus.Dataquery, width: int = 12) -> Panel:
    """A table of an instant query's series, one row per series (Grafana's "labels to fields")."""
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(target.ref_id("A").format(PromQueryFormat.TABLE))
        .height(8)
        .span(width)
    )


def by_role(vector: str, role: str, on: str = "namespace, model, revision") -> str:
    """``vector`` (which keeps the labels in ``on``) kept to the revisions whose role is ``role``.
    The role series is reduced to one per revision first: two processes exporting it (an operator
    that has just lost its Lease, two scrape jobs) would otherwise fail the one-to-one match."""
    return f'({vector}) * on({on}) group_left() max by ({on}) ({ROLE}{{{MODEL},role="{role}"}})'


def rate(sample: str, matchers: str = MODEL, *also: str) -> str:
    """The per-second rate of counter ``sample`` over the label ``matchers`` and ``also``
    (more matchers, e.g. ``FIVE_XX``)."""
    return f"rate({sample}{{{','.join((matchers, *also))}}}[$__rate_interval])"


def quantile(q: float, histogram: str, by: str, matchers: str = MODEL) -> str:
    """The ``q`` quantile of a prometheus_client histogram family per ``by`` labels."""
    return f"histogram_quantile({q}, sum by ({by}, le) ({rate(histogram + '_bucket', matchers)}))"


@dataclass(frozen=True)
class Signal:
    """A per-revision signal: each of ``vectors`` is (PromQL that keeps the labels in ``on``,
    legend); ``side_by_side`` keeps it to one role per panel."""

    title: str
    description: str
    unit: str
    vectors: tuple[tuple[str, str], ...]
    on: str = "namespace, model, revision"


def side_by_side(signal: Signal) -> list[Panel]:
    """One panel per role in ``ROLES``, half the width each: stable left, candidate right."""
    return [
        series(
            f"{signal.title}: {role}",
            signal.description,
            signal.unit,
            *(query(by_role(vector, role, signal.on), legend) for vector, legend in signal.vectors),
        )
        for role in ROLES
    ]


def row(builder: dashboard.Dashboard, title: str, panels: Sequence[Panel]) -> dashboard.Dashboard:
    """``panels`` under a row headed ``title``, laid left to right and wrapped at 24 columns."""
    builder = builder.with_row(dashboard.Row(title))
    for panel in panels:
        builder = builder.with_panel(panel)
    return builder


def base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    """A dashboard with the ``datasource`` and ``namespace`` variables every one of them has."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["cutover"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(label_variable("namespace", "Namespace", contract.SERVING_IN_FLIGHT.sample))
    )


def label_variable(
    name: str, label: str, sample: str, matchers: str = "", label_name: str = ""
) -> dashboard.QueryVariable:
    """A multi-value variable over the values of ``label_name`` (default ``name``) on ``sample``,
    "All" meaning any (``.*``)."""
    selector = f"{sample}{{{matchers}}}" if matchers else sample
    values = f"label_values({selector}, {label_name or name})"
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .query({"query": values, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .datasource(DATASOURCE)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


# ---- executive ---------------------------------------------------------------------------------


def executive() -> dashboard.Dashboard:
    """Availability, requests and the error budget, models live, rollouts and their outcomes."""

    def errors(window: str) -> str:
        return f"(sum(increase({REQUESTS}{{{NAMESPACE},{FIVE_XX}}}[{window}])) or vector(0))"

    def total(window: str) -> str:
        return f"sum(increase({REQUESTS}{{{NAMESPACE}}}[{window}]))"

    per_model_errors = f"sum by (namespace, model) ({rate(REQUESTS, NAMESPACE, FIVE_XX)})"
    per_model_total = f"sum by (namespace, model) ({rate(REQUESTS, NAMESPACE)})"
    transitions = "sum(increase(cutover_rollout_transitions_total"
    in_flight = f'{PHASE}{{{NAMESPACE},phase=~"Progressing|Paused"}} == 1'
    slo = (
        dashboard.CustomVariable("slo")
        .label("Availability SLO")
        .description(
            "Percent of requests that must not fail (5xx) over 30 days, the error budget being the rest "
            "(as the chart's monitoring.prometheusRule.slo.availability)"
        )
        .values("99,99.5,99.9,99.95")
        .current(VariableOption(selected=True, text="99.9", value="99.9"))
    )
    builder = base(
        "cutover-executive",
        "cutover / Executive",
        "Availability and error budget of the models cutover serves, and the rollouts that change them",
    ).with_variable(slo)
    builder = row(
        builder,
        "Service",
        [
            single(
                "Availability",
                "Share of inference and chat requests answered without a 5xx over the time range "
                "(cutover_serving_requests_total: every serving process, every traffic provider)",
                "percentunit",
                query(f"1 - {errors('$__range')} / {total('$__range')}", instant=True),
            ),
            single("Requests", "Requests served over the time range", "short", query(total("$__range"), instant=True)),
            single(
                "Error budget left",
                "What is left of the last 30 days' error budget: 1 - (5xx ratio over 30 days) / (1 - SLO); "
                "below 0 the SLO is missed",
                "percentunit",
                query(f"1 - ({errors('30d')} / {total('30d')}) / (1 - $slo / 100)", instant=True),
            ),
            single(
                "Models live",
                "Models with a stable revision taking traffic",
                "short",
                query(
                    f'count(count by (namespace, model) ({ROLE}{{{NAMESPACE},role="stable"}})) or vector(0)',
                    instant=True,
                ),
            ),
            series(
                "Requests per second by model",
                "Inference and chat requests, all revisions together",
                "reqps",
                query(per_model_total, "{{namespace}}/{{model}}"),
            ),
            series(
                "Error budget burn rate by model",
                "5xx ratio / (1 - SLO): 1 spends the budget exactly over the SLO window, 14.4 spends "
                "a 30-day budget in 2 days (Google SRE workbook's fast-burn page)",
                "short",
                query(
                    f"({per_model_errors} or {per_model_total} * 0) / {per_model_total} / (1 - $slo / 100)",
                    "{{namespace}}/{{model}}",
                ),
            ),
        ],
    )
    return row(
        builder,
        "Rollouts",
        [
            single(
                "Rollouts in flight",
                "ModelDeployments whose phase is Progressing or Paused",
                "short",
                query(f"count({in_flight}) or vector(0)", instant=True),
            ),
            single(
                "Promotions",
                "Candidates promoted over the time range",
                "short",
                query(f'{transitions}{{reason="{reasons.PROMOTED}"}}[$__range])) or vector(0)', instant=True),
            ),
            single(
                "Rollbacks",
                "Candidates taken back (failed analysis, timeout, shadow disagreement, abort, on-call, alert) "
                "over the time range",
                "short",
                query(f'{transitions}{{reason=~"{"|".join(ROLLBACKS)}"}}[$__range])) or vector(0)', instant=True),
            ),
            single(
                "Degraded or failed",
                "ModelDeployments in phase Degraded or Failed now",
                "short",
                query(f'count({PHASE}{{{NAMESPACE},phase=~"Degraded|Failed"}} == 1) or vector(0)', instant=True),
            ),
            series(
                "Rollout outcomes",
                "Rollouts started, promotions and each kind of rollback, per hour",
                "short",
                query("sum by (reason) (increase(cutover_rollout_transitions_total[1h]))", "{{reason}}"),
            ),
            series(
                "Verdicts acted on",
                "Analysis verdicts the rollouts acted on, per hour",
                "short",
                query("sum by (verdict) (increase(cutover_rollout_decisions_total[1h]))", "{{verdict}}"),
            ),
            listing(
                "Rollouts in flight now",
                "Each ModelDeployment in flight, its phase and the percent of live traffic on its candidate",
                query(f"({in_flight}) * on(namespace, name) group_left() {WEIGHT}{{{NAMESPACE}}}", instant=True),
                width=24,
            ),
        ],
    )


# ---- operations --------------------------------------------------------------------------------


def operations() -> dashboard.Dashboard:
    """One ModelDeployment's rollout and analysis, then its stable and candidate revisions side by side."""
    builder = (
        base(
            "cutover-operations",
            "cutover / Operations",
            "Rollouts and analysis per ModelDeployment; each data-plane signal for the stable (left) and candidate "
            "(right) revision",
        )
        .with_variable(label_variable("modeldeployment", "ModelDeployment", PHASE, NAMESPACE, "name"))
        .with_variable(label_variable("model", "Model", contract.SERVING_IN_FLIGHT.sample, NAMESPACE))
    )
    analysis = f'{{{DEPLOYMENT},metric=~".+"}}'
    builder = row(
        builder,
        "Rollout and analysis",
        [
            listing(
                "Phase",
                "The ModelDeployment's phase now",
                query(f"{PHASE}{{{DEPLOYMENT}}} == 1", instant=True),
                width=8,
            ),
            listing(
                "Decisions",
                "Each analysis metric's decision in the last analysis (pass, fail, continue, inconclusive)",
                query(f"cutover_analysis_decision{analysis} == 1", instant=True),
                width=16,
            ),
            series(
                "Candidate weight",
                "Percent of live traffic on the candidate",
                "percent",
                query(f"{WEIGHT}{{{DEPLOYMENT}}}", "{{namespace}}/{{name}}"),
            ),
            series(
                "Analysis estimates and bounds",
                "Per metric, the candidate relative to its baseline (a rate ratio: 1 is no change) and its confidence "
                "bounds, valid at any stopping time: a lower bound above 1 plus the metric's margin fails it",
                "short",
                query(f"cutover_analysis_lower_bound{analysis}", "{{name}} {{metric}} lower"),
                query(f"cutover_analysis_estimate{analysis}", "{{name}} {{metric}} estimate"),
                query(f"cutover_analysis_upper_bound{analysis}", "{{name}} {{metric}} upper"),
            ),
        ],
    )
    per_revision = "namespace, model, revision"
    signals = {
        "Requests": [
            Signal(
                "Requests per second",
                "Inference and chat requests answered, by HTTP status",
                "reqps",
                ((f"sum by ({per_revision}, code) ({rate(REQUESTS)})", "{{revision}} {{code}}"),),
            ),
            Signal(
                "5xx ratio",
                "Share of requests answered with a 5xx: what the analysis' error rate counts",
                "percentunit",
                (
                    (
                        f"sum by ({per_revision}) ({rate(REQUESTS, MODEL, FIVE_XX)}) "
                        f"/ sum by ({per_revision}) ({rate(REQUESTS)})",
                        "{{revision}}",
                    ),
                ),
            ),
            Signal(
                "Latency",
                "Time from request to response in the serving process: p50, p90, p99",
                "s",
                tuple((quantile(q, DURATION, per_revision), f"p{round(q * 100)} {{{{revision}}}}") for q in QUANTILES),
            ),
            Signal(
                "Requests in flight",
                "Requests being served now, all pods of the revision together",
                "short",
                ((f"sum by ({per_revision}) ({contract.SERVING_IN_FLIGHT.sample}{{{MODEL}}})", "{{revision}}"),),
            ),
        ],
        "Batching": [
            Signal(
                "Batch queue depth",
                "Requests waiting for their batch, all pods of the revision together (models with batching only)",
                "short",
                ((f"sum by ({per_revision}) (cutover_serving_queue_depth{{{MODEL}}})", "{{revision}}"),),
            ),
            Signal(
                "Batch queue wait",
                "Time a request waited for its batch: p50, p99",
                "s",
                tuple(
                    (
                        quantile(q, "cutover_serving_queue_duration_seconds", per_revision),
                        f"p{round(q * 100)} {{{{revision}}}}",
                    )
                    for q in (0.5, 0.99)
                ),
            ),
            Signal(
                "Rows per model call",
                "Mean rows the batcher gave the model per call",
                "short",
                (
                    (
                        f"sum by ({per_revision}) ({rate('cutover_serving_batch_size_sum')}) "
                        f"/ sum by ({per_revision}) ({rate('cutover_serving_batch_size_count')})",
                        "{{revision}}",
                    ),
                ),
            ),
        ],
        "Fallbacks and circuit breakers": [
            Signal(
                "Fallbacks",
                "Requests answered by a link of the fallback chain instead of the model, by link and reason",
                "reqps",
                (
                    (
                        f"sum by ({per_revision}, link, reason) ({rate('cutover_serving_fallbacks_total')})",
                        "{{revision}} {{link}}: {{reason}}",
                    ),
                ),
            ),
            Signal(
                "Circuit breakers",
                "0 closed, 1 half-open, 2 open: the serving pods' breakers on their fallback links, and the gateway's "
                "on the revision itself",
                "short",
                (
                    (
                        f"max by ({per_revision}, link) (cutover_serving_circuit_breaker_state{{{MODEL}}})",
                        "{{revision}} serving -> {{link}}",
                    ),
                    (
                        f"max by ({per_revision}) (cutover_gateway_circuit_breaker_state{{{MODEL}}})",
                        "{{revision}} gateway",
                    ),
                ),
            ),
        ],
        "Ground truth": [
            Signal(
                "Accuracy",
                "Share of the answers given their truth (POST /v2/models/{name}/feedback, ModelDeployments with "
                "spec.feedback) that were right: what the analysis' accuracy judges",
                "percentunit",
                (
                    (
                        f"sum by ({per_revision}) ({rate(FEEDBACK, MODEL, CORRECT)}) "
                        f"/ sum by ({per_revision}) ({rate(FEEDBACK)})",
                        "{{revision}}",
                    ),
                ),
            ),
            Signal(
                "Expected calibration error",
                "How far the answers' top-class probability is from how often they were right, over ten probability "
                "bins of the answers given their truth: what the analysis' calibrationError judges (0 is calibrated)",
                "short",
                (
                    (
                        f"sum by ({per_revision}) (abs("
                        f"sum by ({per_revision}, bucket) ({rate(BY_CONFIDENCE, MODEL, CORRECT)}) "
                        f"- sum by ({per_revision}, bucket) ({rate(contract.FEEDBACK_CONFIDENCE.sample)})"
                        f")) / sum by ({per_revision}) ({rate(BY_CONFIDENCE)})",
                        "{{revision}}",
                    ),
                ),
            ),
        ],
        "GPU": [
            Signal(
                "GPU utilisation",
                f"NVIDIA DCGM exporter's {contract.GPU_UTILIZATION} averaged over the revision's GPUs (its pods are "
                "named <modeldeployment>-<revision>-...)",
                "percent",
                (
                    (
                        f"avg by (namespace, revision) (label_replace({contract.GPU_UTILIZATION}{{{NAMESPACE}}}, "
                        f'"revision", "$1", "pod", ".+-([0-9a-f]{{10}}(?:{BASELINE_SUFFIX})?)-[a-z0-9]+-[a-z0-9]+"))',
                        "{{revision}}",
                    ),
                ),
                on="namespace, revision",
            ),
        ],
    }
    for title, group in signals.items():
        builder = row(
            builder, f"{title}: stable | candidate", [panel for signal in group for panel in side_by_side(signal)]
        )
    reconciles = "cutover_operator_reconcile_duration_seconds"
    return row(
        builder,
        "Operator",
        [
            series(
                "Reconciles and errors",
                "Reconcile passes per second by kind, and those that failed (every operator process together)",
                "ops",
                query(f"sum by (kind) (rate({reconciles}_count[$__rate_interval]))", "{{kind}}"),
                query(
                    "sum by (kind) (rate(cutover_operator_reconcile_errors_total[$__rate_interval]))", "{{kind}} failed"
                ),
            ),
            series(
                "Reconcile duration",
                "Time of one reconcile pass: p50, p99",
                "s",
                *(
                    query(
                        f"histogram_quantile({q}, sum by (kind, le) (rate({reconciles}_bucket[$__rate_interval])))",
                        f"p{round(q * 100)} {{{{kind}}}}",
                    )
                    for q in (0.5, 0.99)
                ),
            ),
            series(
                "Leaders and watch restarts",
                "Operator processes holding the leader election Lease (1 expected), and the operator's watches started "
                "again per second by resource and why",
                "short",
                query("sum(cutover_operator_leader)", "leaders"),
                query(
                    "sum by (resource, reason) (rate(cutover_operator_watch_restarts_total[$__rate_interval]))",
                    "{{resource}} restarted ({{reason}})",
                ),
            ),
            series(
                "Analysis available",
                "1 while the rollout in progress can read its metrics, 0 once reading failed too often "
                "(weights frozen)",
                "short",
                query(f"cutover_rollout_analysis_available{{{DEPLOYMENT}}}", "{{namespace}}/{{name}}"),
            ),
        ],
    )


# ---- safety ------------------------------------------------------------------------------------


def safety() -> dashboard.Dashboard:
    """What the SafetyPolicy filters found, what they did about it, and how they ran."""
    builder = base(
        "cutover-safety",
        "cutover / Safety",
        "SafetyPolicy findings on the models' inputs and outputs: violations, escalations, blocks, PII redactions",
    ).with_variable(label_variable("model", "Model", contract.SERVING_IN_FLIGHT.sample, NAMESPACE))
    violations = f"sum by (filter, category) ({rate(SAFETY_VIOLATIONS)})"
    blocked = rate(SAFETY_VIOLATIONS, MODEL, 'action="block"')
    redacted = rate(SAFETY_VIOLATIONS, MODEL, 'filter="pii"', 'action="redact"')
    escalated = rate(SAFETY_VIOLATIONS, MODEL, 'filter="crisis"', 'action="escalate"')
    builder = row(
        builder,
        "Findings",
        [
            series(
                "Violations by filter and category",
                "Requests in which a filter found a violation (at most one per request, filter and scope)",
                "reqps",
                query(violations, "{{filter}} {{category}}"),
            ),
            series(
                "Share of checked requests that violated",
                "Violations / requests checked, per filter and scope (input: what users sent, output: what the "
                "model answered, which the safety gates judge)",
                "percentunit",
                query(
                    f"sum by (filter, scope) ({rate(SAFETY_VIOLATIONS)}) "
                    f"/ sum by (filter, scope) ({rate(SAFETY_CHECKS)})",
                    "{{filter}} {{scope}}",
                ),
            ),
            series(
                "Blocked requests",
                "Requests a filter refused with action block, by filter and category",
                "reqps",
                query(
                    f"sum by (filter, category) ({blocked})",
                    "{{filter}} {{category}}",
                ),
            ),
            series(
                "PII redactions",
                "Requests whose text had personal data redacted, by entity and scope",
                "reqps",
                query(
                    f"sum by (category, scope) ({redacted})",
                    "{{category}} {{scope}}",
                ),
            ),
            series(
                "Crisis escalations",
                "Crisis detections escalated (self-harm, suicidal ideation, violence), and the escalation webhook's "
                "deliveries by result",
                "reqps",
                query(
                    f"sum by (category) ({escalated})",
                    "escalated {{category}}",
                ),
                query(f"sum by (result) ({rate('cutover_safety_escalations_total')})", "webhook {{result}}"),
            ),
            listing(
                "Policy applied",
                "The SafetyPolicy and generation each revision applies",
                query(
                    f"max by (namespace, model, revision, policy, generation) (cutover_safety_policy_info{{{MODEL}}})",
                    instant=True,
                ),
            ),
        ],
    )
    by_revision = Signal(
        "Violations by filter",
        "Violations per second of each filter",
        "reqps",
        ((f"sum by (namespace, model, revision, filter) ({rate(SAFETY_VIOLATIONS)})", "{{revision}} {{filter}}"),),
    )
    builder = row(builder, "Violations: stable | candidate", side_by_side(by_revision))
    return row(
        builder,
        "Filters",
        [
            series(
                "Filter latency",
                "Time one filter took on one request's texts in one direction: p50, p99 (the budget is 2 ms for all "
                "filters together)",
                "s",
                *(
                    query(
                        quantile(q, "cutover_safety_filter_duration_seconds", "filter"),
                        f"p{round(q * 100)} {{{{filter}}}}",
                    )
                    for q in (0.5, 0.99)
                ),
            ),
            series(
                "Filter failures and policy load failures",
                "Requests on which a filter failed, and SafetyPolicy files that could not be applied",
                "short",
                query(
                    f"sum by (filter, scope) ({rate('cutover_safety_filter_errors_total')})",
                    "{{filter}} {{scope}} failed",
                ),
                query(
                    f"sum by (revision) ({rate('cutover_safety_policy_load_failures_total')})",
                    "{{revision}} load failed",
                ),
            ),
        ],
    )


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "executive": executive,
    "operations": operations,
    "safety": safety,
}
"""Each dashboard by its file name (without ``.json``)."""


def render(name: str) -> str:
    """Dashboard ``name`` as Grafana's JSON model: keys sorted, 2-space indent, a final newline.
    Panels are numbered in order from 1 (Grafana keys links and repeats by panel id)."""
    built = DASHBOARDS[name]().build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return json.dumps(built, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def write(folder: Path) -> list[Path]:
    """Write every dashboard to ``folder/<name>.json``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in DASHBOARDS:
        path = folder / f"{name}.json"
        path.write_text(render(name))
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cutover.operator.dashboards [--output DIR]`` (what ``make dashboards`` runs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "-o", "--output", default="charts/cutover/dashboards", type=Path, help="directory to write into"
    )
    args = parser.parse_args(argv)
    for path in write(args.output):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
