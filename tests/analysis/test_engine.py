"""The analysis engine on values a metrics backend can return: absent series, non-counts and
inconsistent histograms make a tick ``unavailable`` with the reason, never a pass, a rollback or
an exception, and a failed tick changes nothing (issue 12, items 9 to 11)."""

from __future__ import annotations

import asyncio
import math
import pickle
from dataclasses import replace
from itertools import accumulate
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cutover.analysis import Analysis, Arms, Result, engine
from cutover.api.v1alpha1.modeldeployment import AnalysisSpec

from .fakes import FakeProvider

CAND, BASE = "c0ffee00", "ba5e1111"
ARMS = Arms(CAND, BASE)
DURATION = "cutover_gateway_request_duration_seconds_bucket"
CONFIDENCE = "cutover_prediction_confidence_bucket"
CUSTOM = {"events": 'sum(slow{revision="{{revision}}"})', "total": 'sum(all{revision="{{revision}}"})'}


def analysis(*metrics: dict[str, Any], source: str = "gateway") -> Analysis:
    spec = AnalysisSpec.model_validate(
        {"interval": "30s", "minDuration": "30s", "minSamples": 10, "metrics": list(metrics)}
    )
    return Analysis(spec, namespace="shop", model="ranker", arms=ARMS, started_at=0.0, request_source=source)  # type: ignore[arg-type]


def tick(a: Analysis, provider: FakeProvider, now: float = 30.0) -> Result:
    return asyncio.run(a.tick(provider, now))


def state(a: Analysis) -> bytes:
    """Everything a tick may change, as bytes."""
    return pickle.dumps((a.judges, a.last_tick))


def custom(provider: FakeProvider, revision: str, events: float | None, total: float | None) -> None:
    for part, value in (("events", events), ("total", total)):
        query = CUSTOM[part].replace("{{revision}}", revision)
        provider.vectors[query] = {} if value is None else {(): value}


ERRORS = {"name": "error-rate", "builtin": "errorRate"}
LATENCY = {"name": "latency", "builtin": "latency", "latencyThreshold": "100ms"}
CUSTOM_METRIC = {"name": "slow", "prometheus": CUSTOM}


def healthy(provider: FakeProvider) -> FakeProvider:
    for revision in (CAND, BASE):
        provider.requests("gateway", revision, 1000, 5)
        provider.requests("serving", revision, 1000, 5)
    return provider


# -- item 9: a gate never passes on a series nothing exports, nor reads an absent one as zero --


SAFETY = {"name": "safety", "builtin": "safetyViolations", "critical": True}
VIOLATIONS, CHECKS = "cutover_safety_violations_total", "cutover_safety_checks_total"


@pytest.fixture
def unexported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety series as the contract declared them before serving ran the filters."""
    why = "the SafetyPolicy filters are not on the serving path yet"
    for name in ("SAFETY_VIOLATIONS", "SAFETY_CHECKS"):
        series = getattr(engine, name)
        monkeypatch.setattr(engine, name, replace(series, exported_by=(), not_exported=why))


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety series as serving registers them (whatever the contract says today)."""
    for name in ("SAFETY_VIOLATIONS", "SAFETY_CHECKS"):
        monkeypatch.setattr(engine, name, replace(getattr(engine, name), exported_by=("serving",)))


def safety(provider: FakeProvider, revision: str, scope: str, filter_: str, checks: float, violations: float) -> None:
    """One filter's checks and violations of one revision and scope over the interval (the
    violations under one category and action: the engine sums over them)."""
    child = {"revision": revision, "filter": filter_, "scope": scope}
    provider.series.setdefault(CHECKS, []).append((child, checks))
    provider.series.setdefault(VIOLATIONS, []).append((child | {"category": "c", "action": "flag"}, violations))


@pytest.mark.usefixtures("unexported")
def test_safety_violations_gate_is_unavailable_with_the_reason_never_passes() -> None:
    a = analysis(ERRORS, SAFETY)
    provider = healthy(FakeProvider())
    for now in (30.0, 60.0, 90.0):
        result = tick(a, provider, now)
        assert result.verdict == "unavailable"
    assert "cutover_safety_violations_total is exported by no component" in result.reason
    assert "SafetyPolicy filters are not on the serving path yet" in result.reason
    assert not any("safety_" in s for s in provider.selectors)  # never even queried
    assert result.consecutive_errors == 3


@pytest.mark.usefixtures("exported")
def test_safety_violations_are_a_proportion_of_output_checks_summed_over_filters() -> None:
    """Only the model's answers are judged: the candidate's users may be abusive (input
    violations) without moving the gate, and two output filters count two checks per answer."""
    a = analysis(SAFETY)
    provider = FakeProvider()
    for revision, toxic, advice in ((CAND, 30, 20), (BASE, 2, 3)):
        safety(provider, revision, "output", "toxicity", 1000, toxic)
        safety(provider, revision, "output", "advice", 1000, advice)
    safety(provider, BASE, "input", "toxicity", 1000, 900)  # users, not the model
    result = tick(a, provider)
    [evidence] = result.evidence
    assert (evidence.candidate_samples, evidence.baseline_samples) == (2000, 2000)
    assert evidence.estimate == pytest.approx(50 / 5, rel=0.05)  # rate ratio, candidate / baseline
    assert all('scope="output"' in s for s in provider.selectors if "safety" in s)
    assert {s.split("{")[0] for s in provider.selectors} == {VIOLATIONS, CHECKS}


@pytest.mark.usefixtures("exported")
def test_a_candidate_whose_answers_violate_more_is_rolled_back_with_the_numbers() -> None:
    a = analysis(SAFETY)
    provider = FakeProvider()
    safety(provider, CAND, "output", "toxicity", 200, 20)
    safety(provider, BASE, "output", "toxicity", 200, 1)
    verdicts = [tick(a, provider, 30.0 * k) for k in range(1, 8)]
    rollback = next(r for r in verdicts if r.verdict != "inconclusive" and r.verdict != "continue")
    assert rollback.verdict == "rollback"
    assert "critical metric safety failed" in rollback.reason
    [evidence] = rollback.evidence
    assert evidence.decision == "fail" and evidence.lower is not None and evidence.lower > 1


@pytest.mark.usefixtures("exported")
def test_a_candidate_as_clean_as_stable_is_promoted() -> None:
    a = analysis({**SAFETY, "passMargin": 0.5})
    provider = FakeProvider()
    for revision in (CAND, BASE):
        safety(provider, revision, "output", "advice", 2000, 10)
    verdicts = [tick(a, provider, 30.0 * k).verdict for k in range(1, 30)]
    assert "promote" in verdicts and "rollback" not in verdicts


@pytest.mark.usefixtures("exported")
@pytest.mark.parametrize(
    ("missing", "said"),
    [
        (VIOLATIONS, f'no samples of {VIOLATIONS} with scope="output" for revision {CAND}'),
        (CHECKS, f'no samples of {CHECKS} with scope="output" for revision {CAND}'),
    ],
)
def test_an_absent_safety_series_is_unavailable_never_a_pass(missing: str, said: str) -> None:
    a = analysis(SAFETY)
    provider = FakeProvider()
    safety(provider, CAND, "output", "toxicity", 1000, 0)
    safety(provider, BASE, "output", "toxicity", 1000, 0)
    provider.series[missing] = [row for row in provider.series[missing] if row[0]["revision"] != CAND]
    before = state(a)
    result = tick(a, provider)
    assert result.verdict == "unavailable"
    assert said in result.reason
    assert state(a) == before


@pytest.mark.usefixtures("exported")
def test_a_candidate_filtered_on_inputs_only_has_no_safety_evidence() -> None:
    """A policy with no filter on outputs measures users, not the model: no data, not zero."""
    a = analysis(SAFETY)
    provider = FakeProvider()
    safety(provider, CAND, "input", "toxicity", 1000, 0)
    safety(provider, BASE, "output", "toxicity", 1000, 0)
    result = tick(a, provider)
    assert result.verdict == "unavailable"
    assert f'with scope="output" for revision {CAND}' in result.reason


def test_an_absent_event_series_is_unavailable_not_zero() -> None:
    a = analysis({"name": "ood", "builtin": "outOfDistributionRate"})
    provider = FakeProvider()
    for revision in (CAND, BASE):
        provider.counter("cutover_predictions_total", revision, 500)
    provider.counter("cutover_out_of_distribution_total", BASE, 3)  # the candidate exports none
    result = tick(a, provider)
    assert result.verdict == "unavailable"
    assert f"no samples of cutover_out_of_distribution_total for revision {CAND}" in result.reason
    provider.counter("cutover_out_of_distribution_total", CAND, 0)  # present at 0: no event yet
    assert tick(a, provider).verdict != "unavailable"


def test_absent_error_codes_mean_zero_errors_when_requests_are_present() -> None:
    """The documented exception: a request counter's 5xx child appears with the first 5xx."""
    a = analysis(ERRORS)
    provider = FakeProvider()
    for revision in (CAND, BASE):
        provider.series.setdefault("cutover_gateway_requests_total", []).append(
            ({"revision": revision, "code": "200"}, 1000)
        )
    result = tick(a, provider)
    assert result.verdict != "unavailable"
    assert result.evidence[0].candidate_samples == 1000


# -- item 10: a custom metric with no total is missing data, not too little data ------------------


def test_custom_metric_without_a_total_series_is_unavailable_not_inconclusive() -> None:
    a = analysis(CUSTOM_METRIC)
    provider = FakeProvider()
    custom(provider, CAND, events=0, total=None)  # a label typo: the total query matches nothing
    custom(provider, BASE, events=0, total=400)
    result = tick(a, provider)
    assert result.verdict == "unavailable"
    assert f"the total query for revision {CAND} returned nothing" in result.reason


def test_custom_metric_without_an_events_series_is_unavailable_and_says_how_to_write_zero() -> None:
    a = analysis(CUSTOM_METRIC)
    provider = FakeProvider()
    custom(provider, CAND, events=None, total=400)
    custom(provider, BASE, events=2, total=400)
    result = tick(a, provider)
    assert result.verdict == "unavailable"
    assert "or vector(0)" in result.reason


# -- item 11: any value is either a count or a clear reason; a tick is all or nothing ------------


@pytest.mark.parametrize("part", ["events", "total"])
@pytest.mark.parametrize(
    ("value", "said"),
    [
        (math.nan, "NaN"),
        (math.inf, "inf (infinite)"),
        (-math.inf, "-inf (infinite)"),
        (-3.0, "-3, negative"),
        (2.5, "2.5, not a whole count; a counter's growth is read as sum(increase(<selector>[{{interval}}]))"),
        (1e300, "1e+300, beyond any real count"),
    ],
)
def test_custom_values_that_are_not_counts_are_unavailable(part: str, value: float, said: str) -> None:
    a = analysis(CUSTOM_METRIC)
    provider = FakeProvider()
    custom(provider, BASE, events=2, total=400)
    custom(provider, CAND, **{"events": 1.0, "total": 400.0, part: value})
    before = state(a)
    result = tick(a, provider)
    assert result.verdict == "unavailable"
    assert f"metric slow: the {part} query for revision {CAND} returned a value that is {said}" in result.reason
    assert state(a) == before


def test_custom_events_above_total_are_unavailable() -> None:
    a = analysis(CUSTOM_METRIC)
    provider = FakeProvider()
    custom(provider, CAND, events=12, total=10)
    custom(provider, BASE, events=1, total=10)
    result = tick(a, provider)
    assert result.verdict == "unavailable" and "events must count a subset of total" in result.reason


def test_a_failed_tick_changes_nothing_and_the_next_one_counts_the_gap_once() -> None:
    """A negative custom value after a valid error rate used to update the error rate and then
    raise: the next tick counted that interval twice."""
    a = analysis(ERRORS, CUSTOM_METRIC)
    provider = healthy(FakeProvider())
    custom(provider, CAND, events=-1, total=400)
    custom(provider, BASE, events=1, total=400)
    before = state(a)
    result = tick(a, provider, 30.0)
    assert result.verdict == "unavailable" and "-1, negative" in result.reason
    assert state(a) == before and a.last_tick == 0.0
    custom(provider, CAND, events=1, total=400)  # the fake answers the whole gap (0, 60]
    result = tick(a, provider, 60.0)
    assert result.verdict != "unavailable"
    errors = {e.name: e for e in result.evidence}["error-rate"]
    assert (errors.candidate_samples, errors.baseline_samples) == (1005, 1005)
    assert a.last_tick == 60.0


def latency_buckets(provider: FakeProvider, revision: str, buckets: dict[str, float]) -> None:
    provider.histogram(DURATION, revision, buckets)


GOOD = {"0.05": 80.0, "0.1": 90.0, "0.25": 99.0, "+Inf": 100.0}


@pytest.mark.parametrize(
    ("candidate", "said"),
    [
        ({"0.05": 80.0, "0.1": 70.0, "0.25": 99.0, "+Inf": 100.0}, "decrease with le"),
        ({"0.05": 80.0, "0.1": 90.0, "0.25": 99.0, "+Inf": 95.0}, "decrease with le"),
        ({"0.05": 80.0, "0.1": 90.0, "0.25": 99.0}, "has no +Inf bucket"),
        ({"0.05": 80.0, "0.1": math.nan, "0.25": 99.0, "+Inf": 100.0}, "is NaN"),
        ({"0.05": 80.0, "0.1": 90.0, "0.25": 99.0, "+Inf": math.inf}, "(infinite)"),
        ({"0.05": 80.0, "0.1": 90.0, "0.25": 99.0, "+Inf": 100.5}, "not a whole count"),
        ({"0.05": 80.0, "zero": 90.0, "+Inf": 100.0}, "le='zero', not a number"),
        ({"0.05": 80.0, "0.25": 99.0, "+Inf": 100.0}, "different bucket edges"),
        ({"0.05": 80.0, "0.25": 99.0, "1": 99.0, "+Inf": 100.0}, "different bucket edges"),
    ],
)
def test_inconsistent_histograms_are_unavailable_and_change_nothing(candidate: dict[str, float], said: str) -> None:
    a = analysis(ERRORS, LATENCY)
    provider = healthy(FakeProvider())
    latency_buckets(provider, BASE, GOOD)
    latency_buckets(provider, CAND, candidate)
    before = state(a)
    result = tick(a, provider)
    assert result.verdict == "unavailable", result.reason
    assert said in result.reason
    assert state(a) == before


def test_a_latency_threshold_that_is_not_an_edge_of_the_histogram_read_is_unavailable() -> None:
    """Missing data, not too little of it: an inconclusive metric ends in AnalysisTimeout."""
    a = analysis({"name": "latency", "builtin": "latency", "latencyThreshold": "500ms"})
    provider = FakeProvider()
    for revision in (CAND, BASE):
        latency_buckets(provider, revision, GOOD)
    result = tick(a, provider)
    assert result.verdict == "unavailable"
    assert "latencyThreshold of latency (0.5s) is not a bucket edge" in result.reason


def test_valid_histograms_are_judged() -> None:
    a = analysis(LATENCY)
    provider = FakeProvider()
    for revision in (CAND, BASE):
        latency_buckets(provider, revision, GOOD)
    result = tick(a, provider)
    assert result.verdict != "unavailable"
    assert result.evidence[0].candidate_samples == 100


# -- the property: whatever the provider returns, tick never raises; a failed tick changes nothing


VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0**53, 2.0**53 + 2, 1e308, math.nan, math.inf]),
)
COUNTS = st.integers(min_value=0, max_value=500).map(float)
EDGES = {DURATION: ("0.05", "0.1", "0.25", "+Inf"), CONFIDENCE: ("0.25", "0.5", "0.75", "+Inf")}


@st.composite
def backends(draw: st.DrawFn) -> FakeProvider:
    """Well-formed answers for every metric, then up to three things broken in them: a value
    replaced by anything a float can be, a series dropped, a bucket renamed, a vector emptied."""
    provider = FakeProvider()
    for revision in (CAND, BASE):
        provider.requests("gateway", revision, draw(COUNTS), draw(COUNTS))
        provider.counter("cutover_predictions_total", revision, draw(COUNTS))
        provider.counter("cutover_out_of_distribution_total", revision, draw(COUNTS))
        for sample, edges in EDGES.items():
            per_bucket = draw(st.lists(COUNTS, min_size=len(edges), max_size=len(edges)))
            provider.histogram(sample, revision, dict(zip(edges, accumulate(per_bucket), strict=True)))
        total = draw(COUNTS)
        custom(provider, revision, events=draw(st.integers(0, int(total)).map(float)), total=total)
    rows = [(name, i) for name, series in sorted(provider.series.items()) for i in range(len(series))]
    for _ in range(draw(st.integers(0, 3))):
        name, i = draw(st.sampled_from(rows))
        labels, value = provider.series[name][i]
        how = draw(st.sampled_from(["value", "drop", "le", "vector"]))
        if how == "value":
            provider.series[name][i] = (labels, draw(VALUES))
        elif how == "drop":
            provider.series[name][i] = ({"revision": "gone"}, value)
        elif how == "le" and "le" in labels:
            le = draw(st.sampled_from(["0.5", "1", "nan", "x", "", "-Inf", "+Inf", "0.1"]))
            provider.series[name][i] = ({**labels, "le": le}, value)
        elif how == "vector":
            query = draw(st.sampled_from(sorted(provider.vectors)))
            provider.vectors[query] = draw(st.sampled_from([{}, {(): draw(VALUES)}, {(): 1.0, (("i", "2"),): 2.0}]))
    return provider


EVERY_METRIC = (
    ERRORS,
    LATENCY,
    {"name": "confidence", "builtin": "predictionConfidence", "direction": "decrease"},
    {"name": "ood", "builtin": "outOfDistributionRate"},
    CUSTOM_METRIC,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    metrics=st.lists(st.sampled_from(EVERY_METRIC), min_size=1, unique_by=lambda m: m["name"]),
    first=backends(),
    second=backends(),
)
def test_tick_never_raises_and_a_failed_tick_changes_no_state(
    metrics: list[dict[str, Any]], first: FakeProvider, second: FakeProvider
) -> None:
    a = analysis(*metrics)
    for now, provider in ((30.0, first), (60.0, second)):
        before = state(a)
        result = tick(a, provider, now)
        event(result.verdict)
        if result.verdict == "unavailable":
            assert state(a) == before
            assert result.reason.startswith("metrics unavailable: ")
        else:
            assert a.last_tick == now
            for evidence in result.evidence:
                assert evidence.candidate_samples >= 0 and evidence.baseline_samples >= 0
            result.status()  # the evidence is writable to the API as it is
