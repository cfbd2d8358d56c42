"""What an AlertRule measures: one value per live revision of each target ModelDeployment.

The queries are pure (:func:`metric_query` builds the PromQL of a builtin metric or fills a
template); reading them goes through the analysis package's Prometheus provider
(``cutover.analysis.PrometheusProvider``, the operator's one Prometheus client) and turns every
way a query can fail into a named :class:`QueryProblem` that the handler shows as a condition
and an Event. :func:`evaluate` never raises for bad input: a revision it cannot measure gets an
:class:`~.instances.Observation` without a value and a message saying why, which freezes its
instance (missing data is neither a violation nor a recovery).

The builtins' PromQL is written once, in queries.py, for this evaluator and the rendered
PrometheusRule alike; a builtin over a series that no component exports yet is no data, with the
contract's reason. A revision without traffic in the window has no error rate or latency (0/0
is NaN): no data, not zero. Relative to stable (``condition.relativeTo: stable``) every other live revision's value
is divided by the stable revision's; the stable revision itself is not an instance then (it
would always be 1). Stable at 0 gives 1 when the revision is at 0 too and an infinite ratio
otherwise (an error rate where stable has none violates any ``>`` threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cutover.analysis import MetricProvider, MetricsUnavailable
from cutover.analysis.provider import render
from cutover.api import contract
from cutover.api.v1alpha1 import AlertRule, ModelDeployment
from cutover.api.v1alpha1.alertrule import AlertMetric

from .instances import Observation
from .queries import builtin_query, request_source


class QueryProblem(Exception):
    """A query that gave no usable value; ``reason`` is the condition reason (CamelCase)."""

    reason = "NoData"


class QueryInvalid(QueryProblem):
    """The query cannot run: a PromQL parse error, an unknown template variable. Fix the spec."""

    reason = "QueryInvalid"


class QueryAmbiguous(QueryProblem):
    """The query returned several series where one value per revision is needed."""

    reason = "QueryReturnedSeveralSeries"


class NoData(QueryProblem):
    """The query returned nothing, or NaN (nothing to divide by: no traffic in the window)."""

    reason = "NoData"


class PrometheusUnavailable(QueryProblem):
    """Prometheus could not be asked: unreachable, failing, or its credentials are missing."""

    reason = "MetricsUnavailable"


@dataclass(frozen=True)
class Problem:
    """A query problem of one target: what the handler puts in a condition and an Event."""

    reason: str
    message: str


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation of a rule saw: an observation per target revision, and the problems."""

    observations: tuple[Observation, ...]
    problems: tuple[Problem, ...]


def live_revisions(md: ModelDeployment) -> list[tuple[str, str]]:
    """``(revision, role)`` of every revision in the traffic table (live or mirrored), stable first;
    before the first traffic table is written, the stable and candidate revisions."""
    status = md.status
    if status is None:
        return []
    rows = [(row.revision, str(row.role)) for row in status.traffic]
    if not rows:
        named = ((status.stable_revision, "stable"), (status.candidate_revision, "candidate"))
        rows = [(revision, role) for revision, role in named if revision]
    seen: dict[str, str] = {}
    for revision, role in sorted(rows, key=lambda row: row[1] != "stable"):
        seen.setdefault(revision, role)
    return list(seen.items())


_REFUSED = ("bad_data", "execution")
"""Prometheus' errorTypes for a query that cannot be evaluated as written."""


def metric_query(metric: AlertMetric, md: ModelDeployment, revision: str) -> str:
    """The PromQL that measures ``metric`` for one revision of ``md``: the builtin's query, or
    the template with ``{{model}}``, ``{{namespace}}``, ``{{revision}}`` and ``{{window}}``
    filled. Raises :class:`QueryInvalid` for an unknown template variable, :class:`NoData` for
    a builtin nothing exports."""
    namespace, model = md.metadata.namespace or "", md.spec.model.name
    if metric.builtin is not None:
        labels = {"namespace": namespace, "model": model, "revision": revision}
        query = builtin_query(metric.builtin, request_source(md), labels, metric.window)
        for series in contract.SERIES:
            if not series.exported_by and series.name in query:
                raise NoData(f"{series.sample} is exported by no component: {series.not_exported}")
        return query
    assert metric.query is not None  # the API admits exactly one of builtin and query
    variables = {"model": model, "namespace": namespace, "revision": revision, "window": metric.window}
    try:
        return render(metric.query, variables)
    except ValueError as err:
        raise QueryInvalid(f"metric.query: {err}") from err


def _labels_text(labels: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in labels) + "}"


async def measure(provider: MetricProvider, query: str, at: float) -> float:
    """The one value ``query`` returns at ``at`` (Unix seconds).

    Raises :class:`QueryInvalid` when Prometheus refuses the query (``bad_data``: it does not
    parse, or cannot be evaluated), :class:`QueryAmbiguous` for several series,
    :class:`NoData` for none or NaN, :class:`PrometheusUnavailable` when Prometheus cannot be
    asked. An infinite value is returned as such."""
    try:
        vector = await provider.instant(query, at)
    except MetricsUnavailable as err:
        if any(f"answered {kind}" in str(err) for kind in _REFUSED):  # the provider names the errorType
            raise QueryInvalid(f"Prometheus refused the query {query!r}: {err}") from err
        if "expected a vector" in str(err):
            raise QueryInvalid(f"the query must return an instant vector (wrap a scalar in vector()): {err}") from err
        raise PrometheusUnavailable(str(err)) from err
    if len(vector) > 1:
        shown = ", ".join(_labels_text(labels) for labels in list(vector)[:3])
        raise QueryAmbiguous(f"the query returned {len(vector)} series ({shown}), not one: {query}")
    if vector:
        return next(iter(vector.values()))
    # The provider drops NaN elements; count() says whether there were any.
    try:
        counted = await provider.instant(f"count({query})", at)
    except MetricsUnavailable:
        counted = {}
    if any(n > 0 for n in counted.values()):
        raise NoData(f"the query returned NaN (nothing to divide by: no traffic in the window?): {query}")
    raise NoData(f"the query returned nothing: {query}")


async def evaluate(provider: MetricProvider, rule: AlertRule, md: ModelDeployment, at: float) -> Evaluation:
    """Measure ``rule``'s metric for every live revision of ``md`` at ``at`` (Unix seconds).

    Each revision gets an observation; one that could not be measured carries None and the
    reason, and the problem is listed once per reason. Relative to stable, the stable
    revision's value is the denominator and the stable revision itself is left out."""
    target = f"{md.metadata.namespace}/{md.metadata.name}"
    revisions = live_revisions(md)
    relative = rule.spec.condition.relative_to == "stable"
    values: dict[str, float | QueryProblem] = {}
    for revision, _role in revisions:
        try:
            values[revision] = await measure(provider, metric_query(rule.spec.metric, md, revision), at)
        except QueryProblem as problem:
            values[revision] = problem
    stable = next((revision for revision, role in revisions if role == "stable"), None)
    observations: list[Observation] = []
    problems: dict[tuple[str, str], Problem] = {}

    def observe(revision: str, role: str, value: float | None, message: str) -> None:
        observations.append(Observation(target, md.spec.model.name, revision, role, value, message))

    for revision, role in revisions:
        got = values[revision]
        if relative and revision == stable:
            continue
        if isinstance(got, QueryProblem):
            message = f"{target} revision {revision}: {got}"
            problems.setdefault((got.reason, str(got)), Problem(got.reason, message))
            observe(revision, role, None, str(got))
            continue
        if not relative:
            observe(revision, role, got, "")
            continue
        base = values.get(stable) if stable is not None else None
        if base is None:
            observe(revision, role, None, f"{target} has no stable revision to compare with")
            continue
        if isinstance(base, QueryProblem):
            observe(revision, role, None, f"no value for the stable revision {stable}: {base}")
            problems.setdefault((base.reason, str(base)), Problem(base.reason, f"{target} stable {stable}: {base}"))
            continue
        observe(revision, role, ratio(got, base), f"{got:.6g} against stable {base:.6g}")
    return Evaluation(tuple(observations), tuple(problems.values()))


def ratio(value: float, stable: float) -> float:
    """``value / stable``; 1 when both are 0, infinite when only stable is 0."""
    if stable == 0:
        return 1.0 if value == 0 else math.copysign(math.inf, value)
    return value / stable


def worst(problems: Sequence[Problem]) -> Problem | None:
    """The problem to show first: a spec to fix before data that is missing."""
    order = {QueryInvalid.reason: 0, QueryAmbiguous.reason: 1, PrometheusUnavailable.reason: 2, NoData.reason: 3}
    return min(problems, key=lambda p: order.get(p.reason, 9), default=None)
