"""The Prometheus provider: exact increments from raw samples, real response parsing, retries."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import httpx
import pytest

from cutover.analysis import MetricsUnavailable, PrometheusProvider, increment
from cutover.analysis.provider import parse_matrix, parse_vector, render

RESPONSES = json.loads((Path(__file__).parent / "data" / "prometheus-2.42-responses.json").read_text())


def test_increment_counts_growth_inside_the_interval_only() -> None:
    samples = [(0.0, 100.0), (15.0, 110.0), (30.0, 130.0), (45.0, 160.0)]
    assert increment(samples, 15.0, 45.0) == 50.0
    assert increment(samples, 0.0, 30.0) == 30.0


def test_increment_handles_a_counter_reset() -> None:
    """The process restarted between 15 s and 30 s: 110 -> 4 means 4 new events, not -106."""
    samples = [(0.0, 100.0), (15.0, 110.0), (30.0, 4.0), (45.0, 9.0)]
    assert increment(samples, 0.0, 45.0) == 10 + 4 + 5


def test_a_series_born_inside_the_interval_counts_from_zero() -> None:
    assert increment([(20.0, 7.0), (35.0, 12.0)], 10.0, 40.0) == 12.0


def test_parse_real_matrix_and_exact_increment() -> None:
    series = parse_matrix(RESPONSES["matrix"])
    assert {labels["code"] for labels, _ in series} == {"200", "503"}
    ok = next(samples for labels, samples in series if labels["code"] == "200")
    start, end = ok[0][0], ok[-1][0]
    assert increment(ok, start, end) == ok[-1][1] - ok[0][1]
    assert float(increment(ok, start, end)).is_integer()
    # What increase() answered for the same data is extrapolated, not a count.
    (element,) = parse_vector(RESPONSES["vector"])
    assert not element[1].is_integer()


def test_parse_real_histogram_series() -> None:
    series = parse_matrix(RESPONSES["histogram"])
    assert sorted(labels["le"] for labels, _ in series) == ["+Inf", "0.05", "0.1", "0.25"]


def test_error_answer_becomes_unavailable() -> None:
    with pytest.raises(MetricsUnavailable, match="bad_data"):
        parse_vector(RESPONSES["bad_query"])


def test_wrong_result_type_is_refused() -> None:
    with pytest.raises(MetricsUnavailable, match="expected a vector"):
        parse_vector(RESPONSES["matrix"])


def test_templates() -> None:
    q = render('sum(x{revision="{{revision}}"}[{{ interval }}])', {"revision": "abc", "interval": "30s"})
    assert q == 'sum(x{revision="abc"}[30s])'
    with pytest.raises(ValueError, match="unknown template variable"):
        render("x{{pod}}", {"revision": "abc"})


def provider(handler: httpx.MockTransport) -> PrometheusProvider:
    return PrometheusProvider(httpx.AsyncClient(transport=handler), "http://prom:9090", retries=2, backoff=0.0)


def test_server_errors_are_retried_then_succeed() -> None:
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(503, text="overloaded")
        return httpx.Response(200, json=RESPONSES["matrix"])

    result = asyncio.run(provider(httpx.MockTransport(handle)).increments("x", ("code",), 0, 1e12))
    assert len(calls) == 3 and set(result) == {(("code", "200"),), (("code", "503"),)}
    assert calls[0].url.params["query"].startswith("x[")


def test_unreachable_server_is_unavailable_after_retries() -> None:
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused")

    with pytest.raises(MetricsUnavailable, match="unreachable"):
        asyncio.run(provider(httpx.MockTransport(handle)).instant("up", 0))
    assert len(calls) == 3


def test_a_bad_query_is_not_retried() -> None:
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json=RESPONSES["bad_query"])

    with pytest.raises(MetricsUnavailable, match="parse error"):
        asyncio.run(provider(httpx.MockTransport(handle)).instant("sum(", 0))
    assert len(calls) == 1


def matrix(*series: tuple[dict[str, str], list[tuple[float, str]]]) -> dict[str, object]:
    result = [{"metric": labels, "values": [[t, v] for t, v in samples]} for labels, samples in series]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def test_a_reset_seen_in_one_bucket_is_a_reset_of_every_bucket_of_that_histogram() -> None:
    """The process restarted between 15 s and 30 s. Bucket 0.1 dropped (100 -> 5); +Inf had
    already grown past its old value (120 -> 123), so alone it looked like 3 new requests and the
    cumulative buckets came out 5 > 3. Read together, both restarted: 5 and 123."""
    before = {"__name__": "d_bucket", "revision": "r1", "instance": "10.0.0.1:8080"}
    body = matrix(
        ({**before, "le": "0.1"}, [(15.0, "100"), (30.0, "5")]),
        ({**before, "le": "+Inf"}, [(15.0, "120"), (30.0, "123")]),
        ({**before, "instance": "10.0.0.2:8080", "le": "+Inf"}, [(15.0, "50"), (30.0, "60")]),  # other pod
    )
    prom = provider(httpx.MockTransport(lambda request: httpx.Response(200, json=body)))
    result = asyncio.run(prom.increments("d_bucket", ("le",), 15.0, 30.0))
    assert result == {(("le", "0.1"),): 5.0, (("le", "+Inf"),): 123.0 + 10.0}


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"status": "success", "data": {"resultType": "matrix", "result": {"not": "a list"}}},
        {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}}]}},
        {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [["x", "1"]]}]}},
        {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "one"]]}]}},
        {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {"a": 1}, "values": []}]}},
        {"status": "success", "data": "matrix"},
    ],
)
def test_a_malformed_answer_is_unavailable(body: object) -> None:
    prom = provider(httpx.MockTransport(lambda request: httpx.Response(200, json=body)))
    with pytest.raises(MetricsUnavailable):
        asyncio.run(prom.increments("x", ("code",), 0.0, 30.0))


def test_nan_and_infinite_samples_are_passed_on_for_the_engine_to_judge() -> None:
    body = matrix(({"code": "200"}, [(15.0, "1"), (30.0, "NaN")]), ({"code": "500"}, [(15.0, "1"), (30.0, "+Inf")]))
    prom = provider(httpx.MockTransport(lambda request: httpx.Response(200, json=body)))
    result = asyncio.run(prom.increments("x", ("code",), 15.0, 30.0))
    assert math.isnan(result[(("code", "200"),)]) and result[(("code", "500"),)] == math.inf


def test_a_series_without_a_sample_inside_the_interval_is_no_data_not_zero() -> None:
    """Scraped every 30 s for a 30 s interval whose scrape fell just outside it: the series says
    nothing about the interval, so it is left out (the engine then reports it unavailable)."""
    labels = {"__name__": "requests_total", "revision": "r1"}
    body = matrix((labels, [(0.0, "100"), (29.0, "130")]), ({**labels, "revision": "r2"}, [(31.0, "7")]))
    prom = provider(httpx.MockTransport(lambda request: httpx.Response(200, json=body)))
    result = asyncio.run(prom.increments("requests_total", ("revision",), 30.0, 60.0))
    assert result == {(("revision", "r2"),): 7.0}
