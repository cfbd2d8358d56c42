"""The PromQL of the AlertRule builtin metrics, written once for the two places that read it:
cutover's own evaluator (one revision at a time, a single series back) and the rendered
PrometheusRule (every revision of a target at once, one series per revision).

Each builtin is a value per revision over the rule's ``window`` (``metric.window``), from the
series of :mod:`cutover.api.contract` (labels ``namespace``, ``model``, ``revision``):

======================  ====================================================================
builtin                 value (``rate`` over the window; a ratio of rates = of counts)
======================  ====================================================================
errorRate               5xx requests / all requests (no 5xx child with requests present = 0)
latencyP50, latencyP99  ``histogram_quantile`` of the request-duration histogram, in seconds
predictionConfidence    mean top-class probability (histogram sum / count)
outOfDistributionRate   out-of-distribution rows / rows predicted
safetyViolationRate     safety violations / safety checks on the model's answers
                        (``scope="output"``), summed over the policy's filters
requestRate             requests per second
accuracy                fed-back rows answered right / all fed-back rows (gateway feedback)
calibrationError        expected calibration error of the fed-back rows with a probability:
                        sum over bins of |right - summed confidence| / rows
inputDrift              the largest population stability index over the features the training
                        statistics bin, of the rows in the window against the training shares,
                        smoothed as the rollout analysis does (:mod:`cutover.analysis.drift`)
======================  ====================================================================

The feedback series exist only for a ModelDeployment with ``spec.feedback`` whose answers went
through the gateway; without them the two feedback builtins have no data.

Requests and latency come from the gateway's series when the ModelDeployment's
``traffic.provider`` is ``gateway`` (it sees every answer, a crashing pod's included), else
from the serving pods' series: the same choice as the rollout analysis
(:func:`request_source`).

Safety violations are read as the rollout analysis reads them
(:data:`cutover.analysis.engine.SAFETY_SCOPE`): on the model's answers only, out of the checks
the filters made on them, never out of requests (a request is checked once per filter, and what
users send says nothing about a revision). Serving creates both counters' children at 0 for
the policy's filters, so an absent series (no policy, no filter on outputs) is no data.

Unlike the rollout analysis, which counts from raw samples, an alert reads ``rate()``: an alert
compares a level against a threshold, where Prometheus' extrapolation at the window's edges
changes nothing that matters, and the rendered rule must be PromQL that Prometheus evaluates
as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args, get_origin

from cutover.analysis.drift import REFERENCE_FLOOR, SMOOTHING
from cutover.analysis.engine import SAFETY_SCOPE, RequestSource
from cutover.api.contract import (
    FEEDBACK,
    FEEDBACK_BY_CONFIDENCE,
    FEEDBACK_CONFIDENCE,
    INPUT_FEATURE_REFERENCE,
    INPUT_FEATURE_ROWS,
    OUT_OF_DISTRIBUTION,
    PREDICTION_CONFIDENCE,
    PREDICTIONS,
    REQUEST_DURATION,
    REQUESTS,
    SAFETY_CHECKS,
    SAFETY_VIOLATIONS,
    Series,
)
from cutover.api.v1alpha1 import ModelDeployment
from cutover.api.v1alpha1.alertrule import AlertMetric

BUILTINS: tuple[str, ...] = next(
    get_args(arg) for arg in get_args(AlertMetric.model_fields["builtin"].annotation) if get_origin(arg) is Literal
)
"""The builtin metric names of the API (``metric.builtin``)."""
BY_REVISION = ("namespace", "model", "revision")
"""The grouping of a rendered rule: one series per revision."""


def request_source(md: ModelDeployment) -> RequestSource:
    """Whose request and latency series describe ``md``'s revisions: the gateway's when it
    routes the traffic, else the serving pods'."""
    return "gateway" if md.spec.traffic.provider == "gateway" else "serving"


def matchers(labels: Mapping[str, str]) -> str:
    """PromQL equality matchers (without braces) for ``labels``, values escaped:
    ``namespace="shop",model="ranker"``."""
    return ",".join(f"{name}={string_literal(value)}" for name, value in labels.items())


def string_literal(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal, its backslashes, quotes and newlines
    escaped (a regular expression's own escapes need that second layer)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def builtin_query(
    builtin: str, source: RequestSource, labels: Mapping[str, str], window: str, by: Sequence[str] = ()
) -> str:
    """The PromQL of ``builtin`` over the series selected by ``labels``, summed ``by`` those
    labels (nothing: one series), over ``window`` (a PromQL duration such as ``5m``).

    The evaluator passes a revision's ``namespace``, ``model`` and ``revision`` and no ``by``;
    the renderer a target's ``namespace`` and ``model`` and ``by`` :data:`BY_REVISION`.

    Raises:
        ValueError: ``builtin`` is not one of :data:`BUILTINS`.
    """
    build = _BUILTINS.get(builtin)
    if build is None:
        raise ValueError(f"unknown builtin metric {builtin!r}; known: {', '.join(BUILTINS)}")
    return build(_Select(source, matchers(labels), window, tuple(by)))


@dataclass(frozen=True)
class _Select:
    """How one query selects and sums: the request source, the matchers, window and grouping."""

    source: RequestSource
    matchers: str
    window: str
    by: tuple[str, ...]

    def rate(self, sample: str, extra: str = "", by: tuple[str, ...] = ()) -> str:
        """``sum by (...) (rate(sample{matchers,extra}[window]))``."""
        inner = ",".join(m for m in (self.matchers, extra) if m)
        grouping = (*self.by, *by)
        head = f"sum by ({', '.join(grouping)}) " if grouping else "sum"
        return f"{head}(rate({sample}{{{inner}}}[{self.window}]))"

    def counter(self, series: Series, extra: str = "") -> str:
        return self.rate(series.sample, extra)

    @property
    def requests(self) -> Series:
        return REQUESTS[self.source]


def _error_rate(s: _Select) -> str:
    # A request counter's child per code appears with its first answer: requests present and no
    # 5xx child means no errors, so the missing numerator is read as 0, not as no data.
    everything = s.counter(s.requests)
    errors = s.counter(s.requests, 'code=~"5.."')
    return f"({errors} or {everything} * 0) / {everything}"


def _violation_rate(s: _Select) -> str:
    only = f'scope="{SAFETY_SCOPE}"'
    return f"{s.counter(SAFETY_VIOLATIONS, only)} / {s.counter(SAFETY_CHECKS, only)}"


def _latency(quantile: float) -> Callable[[_Select], str]:
    def query(s: _Select) -> str:
        return f"histogram_quantile({quantile}, {s.rate(REQUEST_DURATION[s.source].sample, by=('le',))})"

    return query


def _confidence(s: _Select) -> str:
    name = PREDICTION_CONFIDENCE.name
    return f"{s.rate(name + '_sum')} / {s.rate(name + '_count')}"


_CORRECT = 'outcome="correct"'


def _accuracy(s: _Select) -> str:
    return f"{s.counter(FEEDBACK, _CORRECT)} / {s.counter(FEEDBACK)}"


def _calibration_error(s: _Select) -> str:
    # ECE = sum over bins of |right_b - confidence_b| / rows: rates over one window are counts
    # over it divided by its length, which cancels out.
    right = s.rate(FEEDBACK_BY_CONFIDENCE.sample, _CORRECT, by=("bucket",))
    confidence = s.rate(FEEDBACK_CONFIDENCE.sample, by=("bucket",))
    head = f"sum by ({', '.join(s.by)}) " if s.by else "sum"
    return f"{head}(abs({right} - {confidence})) / {s.counter(FEEDBACK_BY_CONFIDENCE)}"


def _input_drift(s: _Select) -> str:
    # PSI = sum over bins of (p - q) ln(p / q) per feature, then the largest feature. Live shares
    # from the window's rows with SMOOTHING added to each bin, training shares floored at
    # REFERENCE_FLOOR and renormalised: the same numbers as cutover.analysis.drift.
    bins, features = (*s.by, "feature", "bin"), (*s.by, "feature")
    on = f"on ({', '.join(features)}) group_left"
    counted = f"increase({INPUT_FEATURE_ROWS.sample}{{{s.matchers}}}[{s.window}])"
    rows = f"(sum by ({', '.join(bins)}) ({counted}) + {SMOOTHING})"
    live = f"({rows} / {on} sum by ({', '.join(features)}) ({rows}))"
    floored = (
        f"clamp_min(max by ({', '.join(bins)}) ({INPUT_FEATURE_REFERENCE.sample}{{{s.matchers}}}), {REFERENCE_FLOOR})"
    )
    train = f"({floored} / {on} sum by ({', '.join(features)}) ({floored}))"
    head = f"max by ({', '.join(s.by)}) " if s.by else "max"
    return f"{head}(sum by ({', '.join(features)}) (({live} - {train}) * ln({live} / {train})))"


_BUILTINS: dict[str, Callable[[_Select], str]] = {
    "errorRate": _error_rate,
    "latencyP50": _latency(0.5),
    "latencyP99": _latency(0.99),
    "predictionConfidence": _confidence,
    "outOfDistributionRate": lambda s: f"{s.counter(OUT_OF_DISTRIBUTION)} / {s.counter(PREDICTIONS)}",
    "safetyViolationRate": _violation_rate,
    "requestRate": lambda s: s.counter(s.requests),
    "accuracy": _accuracy,
    "calibrationError": _calibration_error,
    "inputDrift": _input_drift,
}
assert set(_BUILTINS) == set(BUILTINS), "every builtin of the API has its PromQL"
