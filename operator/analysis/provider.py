"""Where metric values come from: one small interface, Prometheus its first implementation.

The sequential tests need exact integer counts per interval, so the Prometheus provider does
not use ``increase()`` (which extrapolates to the window edges and returns fractional, sometimes
biased counts). It reads the raw counter samples of every series and computes the increment
over ``(start, end]`` itself, per series and before any summing, treating a drop as a counter
reset (a restarted process); a drop in one bucket of a histogram is a reset of all its buckets.
A series first seen inside the interval started inside it and is counted from zero. Values are
passed on as Prometheus stored them, NaN and infinities included: the engine decides what is a
count.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

import httpx

Labels = tuple[tuple[str, str], ...]
Samples = list[tuple[float, float]]


class MetricsUnavailable(Exception):
    """Metrics could not be read: the server is unreachable, failing, or answered garbage.
    The analysis reports the verdict ``unavailable`` and keeps its evidence."""


class MetricProvider(Protocol):
    """What the analysis engine needs from a metrics backend."""

    async def increments(self, selector: str, by: Sequence[str], start: float, end: float) -> dict[Labels, float]:
        """Counter increments over (start, end], summed by the ``by`` labels. A series without a
        sample inside the interval is left out (no data, not zero growth)."""
        ...

    async def instant(self, query: str, at: float) -> dict[Labels, float]:
        """An instant query's vector, keyed by each element's labels."""
        ...


def increment(samples: Samples, start: float, end: float, resets: Collection[float] = ()) -> float:
    """How much a counter grew over (start, end], from its raw samples (time, value).

    The last sample at or before ``start`` is the reference; without one the series began in
    the interval and counts from zero. A value below its predecessor is a reset: the counter
    restarted from zero, so the new value is all growth. ``resets`` are sample times known to
    follow a restart even where this series did not drop (another series of the same process
    did)."""
    before = [v for t, v in samples if t <= start]
    previous = before[-1] if before else 0.0
    total = 0.0
    for t, value in samples:
        if start < t <= end:
            total += value - previous if value >= previous and t not in resets else value
            previous = value
    return total


def histogram_resets(series: Sequence[tuple[Mapping[str, str], Samples]]) -> dict[Labels, set[float]]:
    """Restart times of each histogram, keyed by its labels without ``le``: the sample times at
    which any of its buckets dropped. All buckets of one process are scraped together and reset
    together, so a drop in one bucket is a reset of all, even of a bucket that had grown past
    its old value by the next scrape (whose own increment would otherwise be undercounted and
    leave the cumulative buckets out of order)."""
    resets: dict[Labels, set[float]] = defaultdict(set)
    for labels, samples in series:
        if "le" not in labels:
            continue
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        resets[key].update(t for (_, a), (t, b) in pairwise(samples) if b < a)
    return dict(resets)


def _key(labels: Mapping[str, str], by: Sequence[str]) -> Labels:
    return tuple((name, labels.get(name, "")) for name in by)


def parse_matrix(body: Mapping[str, Any]) -> list[tuple[dict[str, str], Samples]]:
    """Series and samples from a Prometheus API response of resultType matrix. Sample values
    are kept as they are (NaN and ±Inf included: the engine judges them); a body of any other
    shape raises :class:`MetricsUnavailable`."""
    data = _data(body, "matrix")
    out = []
    try:
        for series in data["result"]:
            samples = [(float(t), float(v)) for t, v in series["values"]]
            out.append((_metric(series), samples))
    except (KeyError, TypeError, ValueError) as err:
        raise MetricsUnavailable(f"Prometheus answered a malformed matrix: {err!r}") from None
    return out


def parse_vector(body: Mapping[str, Any]) -> list[tuple[dict[str, str], float]]:
    """Elements from a Prometheus API response of resultType vector (NaN values dropped); a
    body of any other shape raises :class:`MetricsUnavailable`."""
    data = _data(body, "vector")
    out = []
    try:
        for element in data["result"]:
            value = float(element["value"][1])
            if not math.isnan(value):
                out.append((_metric(element), value))
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise MetricsUnavailable(f"Prometheus answered a malformed vector: {err!r}") from None
    return out


def _metric(element: Mapping[str, Any]) -> dict[str, str]:
    labels = element["metric"]
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise TypeError(f"labels {labels!r} are not a map of strings")
    return {str(k): v for k, v in labels.items()}


def _data(body: Mapping[str, Any], result_type: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise MetricsUnavailable(f"Prometheus answered {type(body).__name__}, not a JSON object")
    if body.get("status") != "success":
        raise MetricsUnavailable(f"Prometheus answered {body.get('errorType', 'error')}: {body.get('error', body)}")
    data = body.get("data") or {}
    if not isinstance(data, Mapping) or data.get("resultType") != result_type:
        got = data.get("resultType") if isinstance(data, Mapping) else type(data).__name__
        raise MetricsUnavailable(f"expected a {result_type} from Prometheus, got {got}")
    if not isinstance(data.get("result"), list):
        raise MetricsUnavailable(f"Prometheus answered a {result_type} without a result list")
    return data


def promql_duration(seconds: float) -> str:
    """A PromQL range such as 95s (whole seconds, at least 1)."""
    return f"{max(1, math.ceil(seconds))}s"


@dataclass
class PrometheusProvider:
    """The Prometheus HTTP API over an async httpx client (shared, created by the caller).

    Retries connection failures and 5xx answers with backoff; a 4xx (a bad query) is not retried.
    ``lookback`` is how far before an interval to look for each series' reference sample: at
    least one scrape interval, well within Prometheus' five-minute staleness window."""

    client: httpx.AsyncClient
    address: str
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5
    lookback: float = 120.0
    headers: Mapping[str, str] | None = None

    async def _get(self, query: str, at: float) -> Mapping[str, Any]:
        url = self.address.rstrip("/") + "/api/v1/query"
        params = {"query": query, "time": f"{at:.3f}"}
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = await self.client.get(url, params=params, timeout=self.timeout, headers=self.headers)
            except httpx.HTTPError as err:
                last = err
                continue
            if response.status_code >= 500:
                last = MetricsUnavailable(f"Prometheus answered HTTP {response.status_code}")
                continue
            try:
                body: Mapping[str, Any] = response.json()
            except ValueError as err:
                raise MetricsUnavailable(f"Prometheus answered HTTP {response.status_code} without JSON") from err
            return body
        raise MetricsUnavailable(f"Prometheus at {self.address} is unreachable: {last}") from last

    async def increments(self, selector: str, by: Sequence[str], start: float, end: float) -> dict[Labels, float]:
        window = promql_duration(end - start + self.lookback)
        series = parse_matrix(await self._get(f"{selector}[{window}]", end))
        resets = histogram_resets(series)
        totals: dict[Labels, float] = defaultdict(float)
        for labels, samples in series:
            if not any(start < t <= end for t, _ in samples):
                # No sample inside the interval (scraped less often than the interval, or gone):
                # nothing is known about it, which is no data, not zero growth.
                continue
            restarted = resets.get(tuple(sorted((k, v) for k, v in labels.items() if k != "le")), set())
            totals[_key(labels, by)] += increment(samples, start, end, restarted)
        return dict(totals)

    async def instant(self, query: str, at: float) -> dict[Labels, float]:
        return {tuple(sorted(labels.items())): value for labels, value in parse_vector(await self._get(query, at))}


def render(template: str, variables: Mapping[str, str]) -> str:
    """Fill ``{{name}}`` variables of a PromQL template; an unknown variable is an error."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise ValueError(f"unknown template variable {{{{{name}}}}}; known: {', '.join(sorted(variables))}")
        return variables[name]

    return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", fill, template)
